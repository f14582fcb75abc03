"""Static checks of launch/segment.launch.py, config/segment.yaml and config/segment.rviz.

The launch file is parsed with ``ast`` (``launch`` / ``launch_ros`` are not installed here):
every executable it starts is a console script of setup.py, every node name has a section
in segment.yaml, every parameter there (and every parameter the launch file sets) is
declared by the node class (instantiated for real), every LaunchConfiguration is declared
as a launch argument, and the referenced config files exist and are installed by setup.py.
"""
from __future__ import annotations

import ast
import glob
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "segment.launch.py"


def _const(node):
    return node.value if isinstance(node, ast.Constant) else None


def _kw(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


@pytest.fixture(scope="module")
def launch_tree():
    return ast.parse(LAUNCH.read_text())


def launch_nodes(tree):
    """[(package, executable, name, parameter-override keys)] of every launch_ros Node(...) call."""
    out = []
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Node":
            params = _kw(call, "parameters")
            keys = []
            if isinstance(params, ast.List):
                for item in params.elts:
                    if isinstance(item, ast.Dict):
                        keys += [_const(k) for k in item.keys]
            out.append((_const(_kw(call, "package")), _const(_kw(call, "executable")), _const(_kw(call, "name")), keys))
    return out


def console_scripts():
    tree = ast.parse((ROOT / "setup.py").read_text())
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and _kw(call, "entry_points") is not None:
            entry = ast.literal_eval(_kw(call, "entry_points"))
            return {s.split("=")[0].strip(): s.split("=")[1].strip() for s in entry["console_scripts"]}
    raise AssertionError("no entry_points in setup.py")


def test_executables_are_console_scripts(launch_tree):
    scripts = console_scripts()
    nodes = launch_nodes(launch_tree)
    ours = [n for n in nodes if n[0] == "drive_segment_ros"]
    assert {n[1] for n in ours} == {"proposal_node", "segmentation_node", "pseudo_label_node", "bag_player_node"}
    for _, exe, _, _ in ours:
        assert exe in scripts, f"{exe} is not a console script in setup.py"
        module, func = scripts[exe].split(":")
        mod = __import__(module, fromlist=[func])
        assert callable(getattr(mod, func))
    assert all(pkg in ("drive_segment_ros", "rviz2") for pkg, *_ in nodes)


def test_launch_arguments_declared(launch_tree):
    declared = {_const(c.args[0]) for c in ast.walk(launch_tree)
                if isinstance(c, ast.Call) and getattr(c.func, "id", None) == "DeclareLaunchArgument"}
    used = {_const(c.args[0]) for c in ast.walk(launch_tree)
            if isinstance(c, ast.Call) and getattr(c.func, "id", None) in ("LaunchConfiguration", "_str") and c.args and _const(c.args[0])}
    assert used <= declared, f"undeclared launch arguments: {used - declared}"
    assert {"model", "backend", "image_topic", "camera_info_topic", "points_topic", "use_rviz"} <= declared


def test_referenced_config_files_exist_and_are_installed(launch_tree):
    names = {_const(c.args[-1]) for c in ast.walk(launch_tree)
             if isinstance(c, ast.Call) and getattr(c.func, "attr", None) == "join" and _const(c.args[-1])}
    assert {"segment.yaml", "segment.rviz"} <= names
    installed = {Path(p).name for p in glob.glob(str(ROOT / "config" / "*.yaml")) + glob.glob(str(ROOT / "config" / "*.rviz"))}
    for name in names:
        assert (ROOT / "config" / name).is_file() and name in installed
    assert "generate_launch_description" in {f.name for f in launch_tree.body if isinstance(f, ast.FunctionDef)}


class _DummyModel:
    def predict(self, rgb):
        return np.zeros(rgb.shape[:2], np.uint8), {}

    def colorize(self, ids):
        return np.zeros(ids.shape + (3,), np.uint8)


@pytest.fixture(scope="module")
def declared(kitti_bag, tmp_path_factory):
    """{node name: set of declared parameter names}, from real node instances."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from drive_segment_ros.nodes.bag_player_node import BagPlayerNode
    from drive_segment_ros.nodes.proposal_node import ProposalNode
    from drive_segment_ros.nodes.pseudo_label_node import PseudoLabelNode
    from drive_segment_ros.nodes.segmentation_node import SegmentationNode

    ctx = Context()
    rclpy.init(context=ctx)
    labeler = SimpleNamespace(k=3, backbone=SimpleNamespace(name="dummy"), config=SimpleNamespace(backbone="dummy"))
    nodes = [
        ProposalNode(context=ctx),
        SegmentationNode(model=_DummyModel(), context=ctx),
        PseudoLabelNode(labeler=labeler, context=ctx, parameter_overrides=[Parameter("out_dir", value=str(tmp_path_factory.mktemp("pl")))]),
        BagPlayerNode(context=ctx, parameter_overrides=[Parameter("bag", value=str(kitti_bag))]),
    ]
    out = {n.get_name(): set(n._parameters) for n in nodes}
    for n in nodes:
        n.destroy_node()
    rclpy.shutdown(context=ctx)
    return out


def test_yaml_parameters_are_declared(declared, launch_tree):
    config = yaml.safe_load((ROOT / "config" / "segment.yaml").read_text())
    names = {n[2] for n in launch_nodes(launch_tree) if n[0] == "drive_segment_ros"}
    assert set(config) == names == set(declared)
    for node, section in config.items():
        keys = set(section["ros__parameters"])
        assert keys <= declared[node], f"{node}: {sorted(keys - declared[node])} in segment.yaml but not declared"
    for _, _, name, keys in launch_nodes(launch_tree):
        if name in declared:
            assert set(keys) <= declared[name], f"{name}: launch sets undeclared {set(keys) - declared[name]}"


def test_rviz_topics_are_published(declared):
    rviz = yaml.safe_load((ROOT / "config" / "segment.rviz").read_text())
    topics = [d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"] if "Topic" in d]
    ours = {"/proposal_node/segments", "/proposal_node/markers", "/segmentation_node/mask_color", "/segmentation_node/semantic_points"}
    assert ours <= set(topics)
    channels = {d.get("Channel Name") for d in rviz["Visualization Manager"]["Displays"]}
    assert {"segment", "class_id"} <= channels  # the fields the nodes add


SKIP_NOT_INSTALLED = (
    "launch_ros is importable, but drive_segment_ros is not in any ament index on AMENT_PREFIX_PATH "
    "(build and source it: `colcon build --packages-select drive_segment_ros && source install/setup.bash`); "
    "the static checks above cover the launch file"
)
INSTALLED_FILES = ("launch/segment.launch.py", "config/segment.yaml", "config/segment.rviz")


def installed_share_or_skip() -> Path:
    """share/drive_segment_ros of an installed prefix, or skip: no launch_ros / not installed.

    Raises (pytest.fail): the prefix is there but lacks the launch or config files setup.py installs.
    """
    pytest.importorskip("launch_ros", reason="launch_ros not installed (PyPI wheels); the static checks above cover the file")
    packages = pytest.importorskip("ament_index_python.packages", reason="ament_index_python not installed")
    try:
        share = Path(packages.get_package_share_directory("drive_segment_ros"))
    except packages.PackageNotFoundError:
        pytest.skip(SKIP_NOT_INSTALLED)
    missing = [name for name in INSTALLED_FILES if not (share / name).is_file()]
    if missing:
        pytest.fail(f"installed prefix {share} lacks {missing}: rebuild (colcon build) after changing setup.py data_files")
    return share


def test_launch_description_builds_when_launch_is_installed():
    """Run the launch description against an installed prefix (config paths resolved there)."""
    share = installed_share_or_skip()
    import importlib.util

    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    description = mod.generate_launch_description()
    assert len(description.entities) > 5
    assert (share / "config" / "segment.yaml").is_file()


def _fake_launch_ros(monkeypatch):
    import types

    pytest.importorskip("ament_index_python.packages", reason="ament_index_python not installed")
    monkeypatch.setitem(__import__("sys").modules, "launch_ros", types.ModuleType("launch_ros"))


def test_launch_skips_when_package_is_not_in_an_ament_index(monkeypatch, tmp_path):
    """launch_ros importable + no installed prefix: a skip with the reason, not PackageNotFoundError."""
    _fake_launch_ros(monkeypatch)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "empty_prefix"))
    with pytest.raises(pytest.skip.Exception, match="not in any ament index"):
        installed_share_or_skip()


def test_launch_uses_an_installed_prefix_when_there_is_one(monkeypatch, tmp_path):
    """A prefix laid out like `colcon build` installs it (setup.py data_files) is found and checked."""
    _fake_launch_ros(monkeypatch)
    prefix = tmp_path / "install" / "drive_segment_ros"
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / "drive_segment_ros"
    marker.parent.mkdir(parents=True)
    marker.write_text("")
    share = prefix / "share" / "drive_segment_ros"
    share.mkdir()
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    with pytest.raises(pytest.fail.Exception, match="lacks"):
        installed_share_or_skip()
    for name in INSTALLED_FILES:
        (share / name).parent.mkdir(parents=True, exist_ok=True)
        (share / name).write_text((ROOT / name).read_text())
    assert installed_share_or_skip() == share
