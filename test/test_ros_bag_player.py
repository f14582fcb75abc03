"""bag_player_node (rosbags -> rclpy) and pseudo_label_node on the replayed real KITTI bag."""
from __future__ import annotations

import json

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from test_ros_harness import RosHarness  # noqa: E402

from drive_segment_ros.nodes.bag_player_node import BagPlayerNode, rclpy_class, to_rclpy  # noqa: E402
from drive_segment_ros.ros.image import image_msg_to_rgb  # noqa: E402
from drive_segment_ros.ros.msgtypes import header_stamp_ns, rclpy_types  # noqa: E402
from drive_segment_ros.ros.pointcloud2 import read_points_xyzi  # noqa: E402
from drive_segment_ros.types import DriveSegmentError  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

IMAGE, INFO, POINTS = "/kitti/camera_color_left/image_raw", "/kitti/camera_color_left/camera_info", "/kitti/velodyne/points"


def bag_messages(bag):
    """{topic: [deserialized rosbags message, ...]} of a bag."""
    from rosbags.highlevel import AnyReader

    out = {}
    with AnyReader([bag]) as reader:
        for conn, _, raw in reader.messages():
            out.setdefault(conn.topic, []).append(reader.deserialize(raw, conn.msgtype))
    return out


@pytest.fixture(scope="module")
def ros():
    h = RosHarness("bagplayer")
    yield h
    h.close()


def test_to_rclpy_copies_every_field(kitti_bag):
    msgs = bag_messages(kitti_bag)
    img = to_rclpy(msgs[IMAGE][0], rclpy_class("sensor_msgs/msg/Image"))
    assert np.array_equal(image_msg_to_rgb(img), image_msg_to_rgb(msgs[IMAGE][0]))
    info_src = msgs[INFO][0]
    info = to_rclpy(info_src, rclpy_class("sensor_msgs/msg/CameraInfo"))
    assert np.array_equal(info.k, info_src.k) and np.array_equal(info.p, info_src.p) and list(info.d) == list(info_src.d)
    assert (info.width, info.height, info.header.frame_id) == (1242, 375, "camera_color_left_optical")
    cloud = to_rclpy(msgs[POINTS][0], rclpy_class("sensor_msgs/msg/PointCloud2"))
    a, _ = read_points_xyzi(cloud)
    b, _ = read_points_xyzi(msgs[POINTS][0])
    assert a.shape == (17238, 4) and np.array_equal(a, b)
    assert header_stamp_ns(cloud) == header_stamp_ns(msgs[POINTS][0])
    with pytest.raises(DriveSegmentError, match="not importable"):
        rclpy_class("no_such_pkg/msg/Nothing")


def test_player_publishes_the_bag(ros, kitti_bag):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock

    T = rclpy_types()
    got = {t: ros.record(c, t) for t, c in ((IMAGE, T.Image), (INFO, T.CameraInfo), (POINTS, T.PointCloud2))}
    clock = ros.record(Clock, "/clock", QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT))
    player = ros.add(BagPlayerNode("player_all", context=ros.context, parameter_overrides=[
        Parameter("bag", value=str(kitti_bag)), Parameter("rate", value=0.0), Parameter("wait_for_subscribers", value=1),
        Parameter("wait_topics", value=[IMAGE, INFO, POINTS])]))
    if T.TFMessage is None:
        assert "/tf_static" in player.skipped_topics
    assert ros.spin_until(lambda: player.done and all(got.values()), 20.0)
    # reliable subscribers (the probe's) acknowledged everything before the player reported done
    assert player.acked is True
    # /clock carries the bag time of the published messages (for use_sim_time)
    assert ros.spin_until(lambda: len(clock) >= 1, 5.0)
    bag_times = {header_stamp_ns(m[0]) for m in got.values()}
    ticks = [c.clock.sec * 10**9 + c.clock.nanosec for c in clock]
    assert min(bag_times) - 10**9 <= min(ticks) and max(ticks) <= max(bag_times) + 10**9
    src = bag_messages(kitti_bag)
    assert np.array_equal(image_msg_to_rgb(got[IMAGE][0]), image_msg_to_rgb(src[IMAGE][0]))
    assert np.array_equal(read_points_xyzi(got[POINTS][0])[0], read_points_xyzi(src[POINTS][0])[0])
    for topic in (IMAGE, INFO, POINTS):
        assert len(got[topic]) == 1
        assert header_stamp_ns(got[topic][0]) == header_stamp_ns(src[topic][0])
        assert got[topic][0].header.frame_id == src[topic][0].header.frame_id
    assert player.n_published == {IMAGE: 1, INFO: 1, POINTS: 1}


def test_player_loops_and_rejects_bad_bags(ros, kitti_bag, tmp_path):
    T = rclpy_types()
    infos = ros.record(T.CameraInfo, "/kitti/camera_color_left/camera_info_loop")
    player = ros.add(BagPlayerNode("player_loop", context=ros.context,
                                   cli_args=["--ros-args", "-r", f"{INFO}:={INFO}_loop"],
                                   parameter_overrides=[Parameter("bag", value=str(kitti_bag)), Parameter("rate", value=0.0),
                                                        Parameter("loop", value=True), Parameter("topics", value=[INFO]),
                                                        Parameter("wait_for_subscribers", value=1)]))
    assert ros.spin_until(lambda: len(infos) >= 3, 20.0)
    assert player.n_loops >= 2 and not player.done
    # each pass is shifted by (bag span + loop_gap_s): stamps never repeat
    stamps = [header_stamp_ns(m) for m in infos[:3]]
    assert stamps[1] - stamps[0] == stamps[2] - stamps[1] == player.span_ns + 100_000_000, stamps
    ros.executor.remove_node(player)
    with pytest.raises(DriveSegmentError, match="not found"):
        BagPlayerNode("player_bad", context=ros.context, parameter_overrides=[Parameter("bag", value=str(tmp_path / "nope"))])
    with pytest.raises(DriveSegmentError, match="no playable topic"):
        BagPlayerNode("player_none", context=ros.context, parameter_overrides=[
            Parameter("bag", value=str(kitti_bag)), Parameter("topics", value=["/not/there"])])


def test_tf_static_is_published_on_the_first_pass_only(monkeypatch):
    """/tf_static goes out on pass 0 only, whether or not the passes shift stamps (docs: first pass only).

    Drives BagPlayerNode's own playback methods (on_timer, _next, offset_ns) over a fake 2-message
    bag for 3 passes; the old condition tested the stamp offset, so with loop_offset_stamps=false
    (offset 0) /tf_static was resent on every pass.
    """
    from types import SimpleNamespace

    from drive_segment_ros.nodes import bag_player_node as bp

    assert bp.publish_on_pass("/tf_static", 0) and not bp.publish_on_pass("/tf_static", 1)
    assert not bp.publish_on_pass("/tf_static", 5) and bp.publish_on_pass("/points", 3)
    conns = [SimpleNamespace(topic="/tf_static"), SimpleNamespace(topic="/points")]
    monkeypatch.setattr(bp, "iter_messages", lambda reader, connections, path: iter([(conns[0], 10, b""), (conns[1], 20, b"")]))

    class Player:  # the playback logic of BagPlayerNode without a ROS node around it
        on_timer, _next, offset_ns = bp.BagPlayerNode.on_timer, bp.BagPlayerNode._next, bp.BagPlayerNode.offset_ns

        def __init__(self, offset_stamps: bool) -> None:
            self.params = {"loop": True, "loop_passes": 3, "loop_offset_stamps": offset_stamps, "loop_gap_s": 0.0, "rate": 0.0}
            self.span_ns, self.reader, self.connections, self.path = 10, None, conns, "fake"
            self.done, self.n_loops, self._gen, self._pending = False, 0, None, None
            self._wall0 = self._bag0 = self._finish_deadline = None
            self.sent = []

        def _ready(self) -> bool:
            return True

        def publish_one(self, conn, t_ns, raw, offset_ns=0) -> None:
            self.sent.append((conn.topic, t_ns))

        def finish(self) -> None:
            self.done = True

    for offset_stamps, points in ((False, [20, 20, 20]), (True, [20, 30, 40])):
        player = Player(offset_stamps)
        for _ in range(20):
            player.on_timer()
        assert player.done and player.n_loops == 2
        assert [t for topic, t in player.sent if topic == "/tf_static"] == [10], (offset_stamps, player.sent)
        assert [t for topic, t in player.sent if topic == "/points"] == points


def test_pseudo_label_node_matches_offline_labeler(ros, kitti_bag, tmp_path):
    """Bag -> player -> pseudo_label_node writes exactly what PseudoLabeler gives offline."""
    import cv2

    from drive_segment_training.drives import DriveReader
    from drive_segment_ros.models.backbones import build_backbone
    from drive_segment_ros.nodes.pseudo_label_node import PseudoLabelNode
    from drive_segment_ros.pseudo_labeling import PseudoLabelConfig, PseudoLabeler

    frame = next(iter(DriveReader(kitti_bag, progress=False)))
    backbone = build_backbone("mobilenetv2_deepsort")
    centroids = np.random.default_rng(0).standard_normal((4, backbone.embed_dim)).astype(np.float32)
    labeler = PseudoLabeler(backbone, centroids, PseudoLabelConfig(backbone="mobilenetv2_deepsort", k=4, max_side=384))
    want_label, want_segments = labeler.label_frame(frame)

    out = tmp_path / "live"
    remap = ["--ros-args", "-r", f"~/image:={IMAGE}", "-r", f"~/camera_info:={INFO}", "-r", f"~/points:={POINTS}"]
    node = ros.add(PseudoLabelNode("pl_node", labeler=labeler, context=ros.context, cli_args=remap, parameter_overrides=[
        Parameter("out_dir", value=str(out)), Parameter("source_name", value=kitti_bag.name),
        Parameter("T_cam_lidar", value=[float(v) for v in frame.T_cam_lidar.ravel()])]))
    ros.add(BagPlayerNode("player_pl", context=ros.context, parameter_overrides=[
        Parameter("bag", value=str(kitti_bag)), Parameter("rate", value=0.0), Parameter("wait_for_subscribers", value=1),
        Parameter("topics", value=[IMAGE, INFO, POINTS])]))
    assert ros.spin_until(lambda: node.n_frames >= 1 or node.n_errors > 0, 60.0)
    assert node.n_frames == 1, node.last_error
    assert not (out / "index.json").exists()  # no completion marker while the node is still labelling
    assert node.finalize() == out / "index.json"
    index = json.loads((out / "index.json").read_text())
    lines = (out / index["frames_file"]).read_text().splitlines()
    assert len(lines) == index["n_frames"] == 1
    rec = json.loads(lines[0])
    assert rec["name"] == f"{kitti_bag.name}__kitti_camera_color_left_image_raw_000000"  # the offline CLI's naming
    assert {"name", "image", "label", "segments", "bag", "image_topic", "stamp_ns", "n_segments", "coverage"} <= set(rec)
    assert {"format", "k", "backbone", "ignore_index", "frames_file", "n_frames", "cluster_pixel_counts"} <= set(index)
    assert index["k"] == 4 and index["format"] == 2 and "frames" not in index
    assert rec["stamp_ns"] == frame.image_stamp_ns and rec["image_topic"] == IMAGE
    label = cv2.imread(str(out / rec["label"]), cv2.IMREAD_UNCHANGED)
    assert label.dtype == np.uint8 and np.array_equal(label, want_label)
    assert rec["segments"].endswith(".png")  # uint16 PNG (id + 1), as the offline run writes
    seg_png = cv2.imread(str(out / rec["segments"]), cv2.IMREAD_UNCHANGED)
    assert seg_png.dtype == np.uint16 and np.array_equal(seg_png.astype(np.int32) - 1, np.maximum(want_segments, -1))
    assert abs(rec["coverage"] - float((want_label != 255).mean())) < 1e-12
    assert sum(index["cluster_pixel_counts"]) == int((want_label != 255).sum())
    assert (out / "previews" / f"{rec['name']}.png").is_file()
    print(f"pseudo_label_node: {rec['n_segments']} segments, coverage {rec['coverage']:.3f}")


def test_console_mains(kitti_bag, capsys):
    """``bag_player_node`` exits 0 at the end of the bag, 2 on a bad bag; ``segment_stack`` likewise."""
    from drive_segment_ros.nodes import bag_player_node, composition

    assert bag_player_node.main(["bag_player_node", "--ros-args", "-p", f"bag:={kitti_bag}", "-p", "rate:=0.0", "-p", "progress:=true"]) == 0
    assert bag_player_node.main(["bag_player_node", "--ros-args", "-p", "bag:=/no/such/bag"]) == 2
    assert composition.main(["--bag", str(kitti_bag), "--rate", "0", "--exit-when-done"]) == 0
    assert composition.main(["--bag", "/no/such/bag", "--exit-when-done"]) == 2
    assert "not found" in capsys.readouterr().err


def test_pseudo_label_node_appends_an_index_that_training_reads(ros, kitti_bag, tmp_path):
    """The node's output is the offline layout: one appended JSON line per frame (earlier bytes never
    rewritten), uint16 PNG segment maps, index.json only once finalized; PseudoLabelDataset reads it."""
    import cv2

    from drive_segment_ros import pseudo_label_store as store
    from drive_segment_ros.models.backbones import build_backbone
    from drive_segment_ros.nodes.pseudo_label_node import PseudoLabelNode
    from drive_segment_ros.pseudo_labeling import PseudoLabelConfig, PseudoLabeler
    from drive_segment_training.datasets import PseudoLabelDataset
    from drive_segment_training.drives import DriveReader

    frame = next(iter(DriveReader(kitti_bag, progress=False)))
    backbone = build_backbone("mobilenetv2_deepsort")
    centroids = np.random.default_rng(1).standard_normal((3, backbone.embed_dim)).astype(np.float32)
    labeler = PseudoLabeler(backbone, centroids, PseudoLabelConfig(backbone="mobilenetv2_deepsort", k=3, max_side=256))
    msgs = bag_messages(kitti_bag)
    img = to_rclpy(msgs[IMAGE][0], rclpy_class("sensor_msgs/msg/Image"))
    info = to_rclpy(msgs[INFO][0], rclpy_class("sensor_msgs/msg/CameraInfo"))
    cloud = to_rclpy(msgs[POINTS][0], rclpy_class("sensor_msgs/msg/PointCloud2"))

    out = tmp_path / "live"
    out.mkdir()
    (out / "index.json").write_text('{"k": 3, "frames": [{"name": "stale"}]}')  # a previous run's marker
    node = PseudoLabelNode("pl_append", labeler=labeler, context=ros.context, parameter_overrides=[
        Parameter("out_dir", value=str(out)), Parameter("source_name", value="drive"), Parameter("previews", value=False),
        Parameter("T_cam_lidar", value=[float(v) for v in frame.T_cam_lidar.ravel()])])
    try:
        assert not (out / "index.json").exists()  # configuring started a new (incomplete) run
        node.on_camera_info(info)
        jsonl = out / "index.jsonl"
        sizes, snapshots = [], []
        for _ in range(3):
            node.label(img, cloud)
            data = jsonl.read_bytes()
            sizes.append(len(data))
            snapshots.append(data)
        # append-only: each frame adds one line, earlier bytes unchanged (no O(frames) rewrite per frame)
        assert snapshots[0] == snapshots[1][: sizes[0]] and snapshots[1] == snapshots[2][: sizes[1]]
        for prev, cur in zip([0] + sizes[:-1], snapshots):  # exactly one whole line per frame
            assert cur[prev:].count(b"\n") == 1 and cur.endswith(b"\n")
        # readers detect the incomplete run exactly as for the offline CLI (no index.json yet)
        with pytest.raises(DriveSegmentError, match="index.json not found"):
            PseudoLabelDataset(out)
        node.finalize()
        index = json.loads((out / "index.json").read_text())
        assert index["n_frames"] == 3 and index["frames_file"] == "index.jsonl" and index["k"] == 3
        ds = PseudoLabelDataset(out, crop_size=(64, 128), train=False)
        assert len(ds) == 3 and ds.k == 3
        names = [r["name"] for r in ds.frames]
        assert names == [f"drive__pl_append_image_{i:06d}" for i in range(3)]  # ~/image, not remapped here
        rgb, label, segments = ds.raw(2)
        assert rgb.shape == (375, 1242, 3) and label.dtype == np.uint8 and segments.dtype == np.int32
        assert (label != 255).any() and (segments[label != 255] >= 0).all()  # labelled pixels lie in a segment
        rec = ds.frames[0]
        assert rec["segments"] == f"segments/{rec['name']}.png" and not list((out / "segments").glob("*.npy"))
        assert cv2.imread(str(out / rec["segments"]), cv2.IMREAD_UNCHANGED).dtype == np.uint16
        item = ds[0]
        assert tuple(item["image"].shape) == (3, 375, 1242) and np.array_equal(item["label"].numpy(), label)  # eval: full frame
        # a frame after finalize makes the run incomplete again until the next finalize
        node.label(img, cloud)
        assert not (out / "index.json").exists() and jsonl.read_bytes()[: sizes[2]] == snapshots[2]
        node.shutdown_hook()
        assert store.open_frame_index(out).meta["n_frames"] == 4 and len(store.open_frame_index(out)) == 4
    finally:
        node.destroy_node()
