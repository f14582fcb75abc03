"""ROS adapters: message conversion and building, bag reading (imports the core only, never rclpy at import time).

* :mod:`.msgtypes` — rosbags / rclpy message class namespaces, headers, :func:`.msgtypes.header_stamp_ns`
  (THE stamp helper).
* :mod:`.pointcloud2`, :mod:`.image` — ``sensor_msgs/PointCloud2`` / ``Image`` / ``CompressedImage``
  <-> numpy (one decoder each, for rosbags and rclpy messages alike).
* :mod:`.camera_info` — ``sensor_msgs/CameraInfo`` <-> :class:`~drive_segment_ros.types.CameraModel`,
  ``TransformStamped`` building.
* :mod:`.bags` — open a ROS 2 / ROS 1 bag with the package typestore and one-line errors.
* :mod:`.sync`, :mod:`.qos` — approximate-time synchronisation, QoS profiles for the nodes.
"""
