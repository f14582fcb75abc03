"""Launch the Drive&Segment nodes on a ROS 2 install (``ros2 launch drive_segment_ros segment.launch.py``).

Starts ``proposal_node`` and ``segmentation_node`` (and optionally ``pseudo_label_node``,
``bag_player_node`` and RViz2) with ``config/segment.yaml`` from the package share
directory. Example::

    ros2 launch drive_segment_ros segment.launch.py model:=/path/student.onnx backend:=onnxruntime \\
        image_topic:=/camera/image_raw camera_info_topic:=/camera/camera_info points_topic:=/lidar/points \\
        bag:=/path/kitti_000008 calibration:=/path/calibration.yaml use_rviz:=true

On machines without ``launch`` / ``launch_ros`` (the PyPI wheels) run the same stack with
``segment_stack`` (:mod:`drive_segment_ros.nodes.composition`). Source: ROS 2 docs,
"Launch" / "Using substitutions" / "Passing ROS arguments to nodes via the command-line".
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def _str(name):
    """A string-typed parameter from a launch argument (an empty string stays a string)."""
    return ParameterValue(LaunchConfiguration(name), value_type=str)


def generate_launch_description():
    share = get_package_share_directory("drive_segment_ros")
    params = os.path.join(share, "config", "segment.yaml")
    rviz_config = os.path.join(share, "config", "segment.rviz")

    args = [
        DeclareLaunchArgument("model", default_value="", description="checkpoint dir (torch), .onnx or .engine/.plan"),
        DeclareLaunchArgument("backend", default_value="auto", description="auto | torch | onnxruntime | tensorrt"),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu | cuda | auto"),
        DeclareLaunchArgument("image_topic", default_value="/kitti/camera_color_left/image_raw"),
        DeclareLaunchArgument("camera_info_topic", default_value="/kitti/camera_color_left/camera_info"),
        DeclareLaunchArgument("points_topic", default_value="/kitti/velodyne/points"),
        DeclareLaunchArgument("image_transport", default_value="raw", description="raw | compressed"),
        DeclareLaunchArgument("use_lidar", default_value="true", description="publish semantic points"),
        DeclareLaunchArgument("calibration", default_value="", description="calibration YAML (else /tf_static)"),
        DeclareLaunchArgument("bag", default_value="", description="play this bag with bag_player_node"),
        DeclareLaunchArgument("rate", default_value="1.0", description="bag playback rate"),
        DeclareLaunchArgument("labeler_dir", default_value="", description="offline pseudo-label dir: enables pseudo_label_node"),
        DeclareLaunchArgument("out_dir", default_value="pseudo_labels_live"),
        DeclareLaunchArgument("use_rviz", default_value="false", description="start RViz2 with config/segment.rviz"),
    ]
    topics = [
        ("~/image", LaunchConfiguration("image_topic")),
        ("~/camera_info", LaunchConfiguration("camera_info_topic")),
        ("~/points", LaunchConfiguration("points_topic")),
    ]
    proposal = Node(
        package="drive_segment_ros",
        executable="proposal_node",
        name="proposal_node",
        parameters=[params],
        remappings=[("~/points", LaunchConfiguration("points_topic"))],
        output="screen",
    )
    segmentation = Node(
        package="drive_segment_ros",
        executable="segmentation_node",
        name="segmentation_node",
        parameters=[
            params,
            {
                "model_path": _str("model"),
                "backend": _str("backend"),
                "device": _str("device"),
                "image_transport": _str("image_transport"),
                "use_lidar": ParameterValue(LaunchConfiguration("use_lidar"), value_type=bool),
                "calibration_yaml": _str("calibration"),
            },
        ],
        remappings=topics,
        output="screen",
    )
    pseudo_label = Node(
        package="drive_segment_ros",
        executable="pseudo_label_node",
        name="pseudo_label_node",
        parameters=[
            params,
            {
                "labeler_dir": _str("labeler_dir"),
                "out_dir": _str("out_dir"),
                "image_transport": _str("image_transport"),
                "calibration_yaml": _str("calibration"),
            },
        ],
        remappings=topics,
        condition=IfCondition(PythonExpression(["'", LaunchConfiguration("labeler_dir"), "' != ''"])),
        output="screen",
    )
    player = Node(
        package="drive_segment_ros",
        executable="bag_player_node",
        name="bag_player",
        parameters=[params, {"bag": _str("bag"), "rate": ParameterValue(LaunchConfiguration("rate"), value_type=float)}],
        condition=IfCondition(PythonExpression(["'", LaunchConfiguration("bag"), "' != ''"])),
        output="screen",
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", rviz_config],
        condition=IfCondition(LaunchConfiguration("use_rviz")),
        output="screen",
    )
    return LaunchDescription(args + [proposal, segmentation, pseudo_label, player, rviz])
