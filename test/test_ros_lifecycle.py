"""Managed (lifecycle) nodes, signals in real processes, and /diagnostics with a real subscriber."""
from __future__ import annotations

import signal
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from test_ros_harness import NodeProcess, RosHarness, assert_clean_exit, process_env, tiny_model  # noqa: E402

from drive_segment_ros.nodes.segmentation_node import SegmentationNode  # noqa: E402
from drive_segment_ros.ros.image import rgb_to_image_msg  # noqa: E402
from drive_segment_ros.ros.msgtypes import rclpy_types  # noqa: E402
from drive_segment_ros.ros.qos import sensor_qos  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402


class _Model:
    palette = np.zeros((256, 3), np.uint8)

    def predict(self, rgb):
        return np.full(rgb.shape[:2], 3, np.uint8), {}

    def colorize(self, ids):
        return np.zeros(ids.shape + (3,), np.uint8)

    def __repr__(self):
        return "DummyModel(backend=test)"


@pytest.fixture(scope="module")
def ros():
    h = RosHarness("lifecycle")
    yield h
    h.close()


def test_managed_transitions(ros, tmp_path):
    T = rclpy_types()
    over = [Parameter("autostart", value=False), Parameter("require_camera_info", value=False), Parameter("use_lidar", value=False)]
    node = ros.add(SegmentationNode("seg_managed", model=_Model(), context=ros.context, parameter_overrides=over,
                                    cli_args=["--ros-args", "-r", "~/image:=/lc/image"]))
    assert node.state == "unconfigured" and node.model is None and node.subs == []
    # a best-effort publisher, like a camera driver with SensorDataQoS
    pub = ros.probe.create_publisher(T.Image, "/lc/image", sensor_qos(1))
    masks = ros.record(T.Image, "/seg_managed/mask")
    # as `ros2 lifecycle set /seg_managed configure|activate` does: the change_state service
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    client = ros.probe.create_client(ChangeState, "/seg_managed/change_state")
    assert ros.spin_until(client.service_is_ready, 10.0)

    def change(transition_id):
        future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        assert ros.spin_until(future.done, 10.0)
        return future.result().success

    assert change(Transition.TRANSITION_CONFIGURE)
    assert node.state == "inactive" and node.model is not None and node.subs == []
    assert change(Transition.TRANSITION_ACTIVATE) and node.state == "active"
    assert ros.wait_matched(pubs=[pub], subs=[ros.subs["/seg_managed/mask"]])
    rgb = np.zeros((24, 32, 3), np.uint8)
    pub.publish(rgb_to_image_msg(rgb, "cam", 1_000_000_000, T))
    assert ros.spin_until(lambda: len(masks) == 1, 10.0)
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS and node.subs == []
    assert ros.spin_until(lambda: pub.get_subscription_count() == 0, 10.0)
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS and node.state == "unconfigured" and node.model is None
    # a model that does not load: FAILURE, back to unconfigured, one error line
    bad = ros.add(SegmentationNode("seg_bad", context=ros.context, parameter_overrides=[
        Parameter("autostart", value=False), Parameter("model_path", value=str(tmp_path / "missing.onnx"))]))
    assert bad.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert bad.state == "unconfigured" and "configure failed" in bad.last_error and "\n" not in bad.last_error


def test_diagnostics_published(ros):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    T = rclpy_types()
    node = ros.add(SegmentationNode("seg_diag", model=_Model(), context=ros.context, cli_args=["--ros-args", "-r", "~/image:=/dg/image"],
                                    parameter_overrides=[Parameter("require_camera_info", value=False), Parameter("use_lidar", value=False)]))
    arrays = ros.record(DiagnosticArray, "/diagnostics")
    pub = ros.publisher(T.Image, "/dg/image")
    assert ros.wait_matched(pubs=[pub], subs=[ros.subs["/diagnostics"]])
    rgb = np.zeros((24, 32, 3), np.uint8)
    pub.publish(rgb_to_image_msg(rgb, "cam", 5_000_000_000, T))
    assert ros.spin_until(lambda: node.n_processed == 1, 10.0)
    pub.publish(rgb_to_image_msg(rgb, "cam", 4_900_000_000, T))  # older: dropped as stale
    assert ros.spin_until(lambda: node.n_stale == 1, 10.0)

    def ours():
        return [s for a in arrays for s in a.status if s.name == "seg_diag: segmentation"]

    def has_counts():
        return any(dict((kv.key, kv.value) for kv in s.values).get("frames in") == "2" for s in ours())

    assert ros.spin_until(has_counts, 5.0), [s for a in arrays for s in a.status]
    status = [s for s in ours() if dict((kv.key, kv.value) for kv in s.values).get("frames in") == "2"][-1]
    values = {kv.key: kv.value for kv in status.values}
    assert status.hardware_id == "DummyModel(backend=test)" and values["model"] == "DummyModel(backend=test)"
    assert values["frames out"] == "1" and values["dropped frames"] == "1" and values["state"] == "active"
    assert {"input rate (Hz)", "output rate (Hz)", "processing latency ms", "last error"} <= set(values)
    assert status.level in (DiagnosticStatus.OK, DiagnosticStatus.WARN)
    # an error shows up as level ERROR with the error line
    bad = rgb_to_image_msg(rgb, "cam", 6_000_000_000, T)
    bad.encoding = "yuv422_yuy2"
    pub.publish(bad)
    assert ros.spin_until(lambda: any(s.level == DiagnosticStatus.ERROR and "yuv422" in s.message for s in ours()), 5.0)


def test_signals_end_real_processes_cleanly(kitti_bag, tmp_path):
    """SIGINT during model loading, SIGTERM while spinning / playing, double SIGINT: exit 0, no traceback."""
    env = process_env(200 + int(time.time()) % 30)
    ckpt = tmp_path / "ckpt"
    tiny_model(ckpt)
    loading = NodeProcess("drive_segment_ros.nodes.segmentation_node", ["-r", "__node:=seg_loading", "-p", f"model_path:={ckpt}"],
                          env, tmp_path, "seg_loading")
    spinning = NodeProcess("drive_segment_ros.nodes.proposal_node", ["-r", "__node:=prop_spin"], env, tmp_path, "prop_spin")
    twice = NodeProcess("drive_segment_ros.nodes.proposal_node", ["-r", "__node:=prop_twice"], env, tmp_path, "prop_twice")
    # waits for subscribers that never come, then plays in a loop at 1/10 speed: SIGTERM mid-play
    player = NodeProcess("drive_segment_ros.nodes.bag_player_node", ["-p", f"bag:={kitti_bag}", "-p", "loop:=true",
                                                                     "-p", "rate:=0.1", "-p", "wait_timeout_s:=0.5"], env, tmp_path, "player")
    procs = [loading, spinning, twice, player]
    try:
        assert loading.wait_for("loading model", 60.0), loading.text()
        loading.signal(signal.SIGINT)
        assert spinning.wait_for("active", 60.0) and twice.wait_for("active", 60.0)
        spinning.signal(signal.SIGTERM, group=False)
        twice.signal(signal.SIGINT)
        time.sleep(0.05)
        twice.signal(signal.SIGINT)
        assert player.wait_for("playing although", 60.0), player.text()
        player.signal(signal.SIGTERM, group=False)
        for p in procs:
            assert_clean_exit(p)
        assert "segmentation_node active" not in loading.text()  # it was stopped while loading
    finally:
        for p in procs:
            p.close()


def test_ctrl_c_while_the_console_script_imports(tmp_path):
    """Ctrl-C 0.1 s after `proposal_node` starts (still importing): exit 0, no KeyboardInterrupt traceback."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "proposal_node"
    if not script.is_file():
        pytest.skip("console script proposal_node not installed next to the interpreter (pip install -e .)")
    env = process_env(230)
    for delay in (0.1, 0.3):
        proc = subprocess.Popen([str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "Traceback" not in out, out[-2000:]
