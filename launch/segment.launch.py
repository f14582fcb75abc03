"""Launch the Drive&Segment nodes on a ROS 2 install (``ros2 launch drive_segment_ros segment.launch.py``).

Starts ``proposal_node`` and ``segmentation_node`` (and optionally ``pseudo_label_node``,
``bag_player_node`` and RViz2) with ``config/segment.yaml`` from the package share
directory. Example::

    ros2 launch drive_segment_ros segment.launch.py model:=/path/student.onnx backend:=onnxruntime \\
        image_topic:=/camera/image_raw camera_info_topic:=/camera/camera_info points_topic:=/lidar/points \\
        bag:=/path/kitti_000008 calibration:=/path/calibration.yaml use_rviz:=true

With ``bag:=`` the player waits (``wait_timeout``, default 30 s) until the nodes subscribed the
image, CameraInfo and point topics, publishes ``/clock`` (start the nodes on bag time with
``use_sim_time:=true``) and exits once every reliable delivery was acknowledged. The nodes are
managed (lifecycle) nodes: ``autostart:=false`` leaves them unconfigured for a lifecycle
manager (``ros2 lifecycle set /segmentation_node configure``). Images over a few hundred kB
need the Fast DDS profile ``config/fastdds_large_data.xml`` in every publishing process (the
nodes apply it to themselves; see docs/vehicle.md for camera drivers).

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


def _bool(name):
    """A bool parameter from a launch argument ("true" / "false")."""
    return ParameterValue(LaunchConfiguration(name), value_type=bool)


def _float(name):
    """A float parameter from a launch argument."""
    return ParameterValue(LaunchConfiguration(name), value_type=float)


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
        DeclareLaunchArgument("loop", default_value="false", description="loop the bag (stamps offset per pass)"),
        DeclareLaunchArgument("wait_timeout", default_value="30.0",
                              description="bag player: wait this long (s) for the nodes to subscribe before playing anyway"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="nodes run on the bag's /clock (the player publishes it)"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure + activate the (lifecycle) nodes at start; false: wait for a lifecycle manager"),
        DeclareLaunchArgument("input_reliability", default_value="best_effort",
                              description="input subscriptions: best_effort (drivers and bag players) or reliable (reliable publishers only)"),
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
        parameters=[
            params,
            {"use_sim_time": _bool("use_sim_time"), "autostart": _bool("autostart"), "qos.points.reliability": _str("input_reliability")},
        ],
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
                "use_lidar": _bool("use_lidar"),
                "calibration_yaml": _str("calibration"),
                "qos.image.reliability": _str("input_reliability"),
                "qos.camera_info.reliability": _str("input_reliability"),
                "qos.points.reliability": _str("input_reliability"),
                "use_sim_time": _bool("use_sim_time"),
                "autostart": _bool("autostart"),
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
                "qos.image.reliability": _str("input_reliability"),
                "qos.camera_info.reliability": _str("input_reliability"),
                "qos.points.reliability": _str("input_reliability"),
                "use_sim_time": _bool("use_sim_time"),
                "autostart": _bool("autostart"),
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
        parameters=[
            params,
            {
                "bag": _str("bag"),
                "rate": _float("rate"),
                "loop": _bool("loop"),
                "wait_timeout_s": _float("wait_timeout"),
                # a list of strings from substitutions: one list per element (launch_ros normalize_parameters)
                "wait_topics": [[LaunchConfiguration("image_topic")], [LaunchConfiguration("camera_info_topic")],
                                [LaunchConfiguration("points_topic")]],
                "publish_clock": True,
                "autostart": _bool("autostart"),
            },
        ],
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
