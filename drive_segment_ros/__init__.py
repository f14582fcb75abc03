"""drive_segment_ros: Drive&Segment (Vobecky et al., ECCV 2022; IJCV 2025) for ROS 2.

The runtime core (proposals, projection, per-frame pseudo-labelling, models, inference) imports
numpy / scipy / OpenCV / torch only; the ROS 2 adapters live in :mod:`drive_segment_ros.ros` and
:mod:`drive_segment_ros.nodes`. The offline pipeline (drive reading, importers, batch stages,
training, evaluation, the ``drive-segment`` CLI) is the separate package ``drive_segment_training``.
"""

__version__ = "0.1.0"
