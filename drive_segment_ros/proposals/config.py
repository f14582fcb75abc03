"""Configuration of the LiDAR object proposals (ground removal + segmentation).

Defaults follow the Drive&Segment re-implementation of Bogoslavskyi & Stachniss
("Efficient online segmentation for sparse 3D laser scans", PFG 2017; PRBonn/depth_clustering):
ground angle 7 deg, segmentation angle 10 deg, smoothing window 7, minimum segment size 20 points
(docs/METHOD.md, stage 2). The range-image rows / vertical field of view used when the scan has
no ``ring`` field default to the Velodyne HDL-64E of KITTI (64 beams, about +2 to -24.9 deg).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Optional

from drive_segment_ros.config import ConfigBase
from drive_segment_ros.types import DriveSegmentError

LOG = logging.getLogger(__name__)

#: Backends accepted by :attr:`ProposalConfig.backend`.
BACKENDS = ("range_image", "dbscan")


@dataclass
class ProposalConfig(ConfigBase):
    """Parameters of :func:`drive_segment_ros.proposals.segment_scan`.

    Common:
        backend: ``"range_image"`` (Bogoslavskyi & Stachniss, default) or ``"dbscan"``
            (RANSAC ground plane + open3d DBSCAN).
        min_range_m, max_range_m: points whose range (metres, from the LiDAR origin) is outside
            ``[min_range_m, max_range_m]`` are UNASSIGNED (nuScenes stores no-return points at
            the origin; its devkit drops points closer than 1 m).
        min_segment_size, max_segment_size: segments with fewer / more points are UNASSIGNED.
        ground_cell_m: cell size (m) of the x/y grid that splits the ground into segments
            (:func:`~drive_segment_ros.proposals.ground_cell_ids`).

    Range-image backend (``range_image.py``):
        ground_angle_deg: a vertical pixel pair is ground when the (smoothed) inclination of the
            line joining its points is below this angle (depth_clustering ``ground_remove_angle``).
            9 deg (7 before): steep streets and ramps (up to ~8 deg) and the range-noise
            inclination of sidewalks and terrain beyond the near field (8-13 deg measured on
            SemanticKITTI) pass, while object faces (> 45 deg raw, ~15-25 deg after smoothing at
            40 m) do not; object recall on KITTI boxes is unchanged up to 13 deg.
        segment_angle_deg: neighbouring pixels join when the angle beta between the beam of the
            farther point and the line joining the two points exceeds this angle (paper Sec. 3.2).
        smooth_window: smoothing window (rows, odd, >= 3; 1 disables) of the column-wise
            inclination angles (paper Sec. 3.1).
        smoothing: ``"mean"`` (moving average: a curb's single steep pixel pair is diluted so
            sidewalks stay ground, while an object's face - several steep pairs - stays steep) or
            ``"savgol"`` (Savitzky-Golay, quadratic, as in depth_clustering; keeps single steps).
        ground_max_step_m: the ground grows sideways (left / right) or downwards only to pixels
            whose height differs by at most this much (m); stops the ground from flooding onto
            flat roofs seen beside far ground while crossing curbs.
        ground_near_m: near-field radius (m, horizontal distance from the sensor; 0 disables).
            Within it a pixel is also a ground candidate when its height lies within
            ``ground_near_tol_m`` of the near ground level (the median height of the ground that
            the inclination test finds within twice this radius; the ground is then grown
            again). Physics: consecutive rows meet flat road ``d rho ~ rho^2 d theta / h`` apart,
            which near the sensor is only a few cm, so the +-2 cm range noise decides the
            pairwise inclination (flat road reads 10-40 deg at 4 m). ``d rho`` reaches the
            ``sqrt(2) sigma / tan(ground_angle_deg)`` ~ 0.2 m needed for a reliable test at
            ``rho ~ 7 m`` for the HDL-64E (``d theta`` ~ 0.42 deg per row, ``h`` = 1.73 m); a sparser
            sensor (HDL-32E, 1.33 deg) needs only ~4 m, where 7 m does no harm. Measured on
            SemanticKITTI (bench/bench_proposal_quality.py): most missed ground lay within 6 m.
        ground_near_tol_m: half-width (m) of that height band: road camber, curbs and sidewalks
            (10-20 cm) and noise; an object's lowest ``ground_near_tol_m`` within
            ``ground_near_m`` becomes ground.
        ground_face_foot: a ground candidate whose upper neighbour rises more than
            ``ground_max_step_m`` and steeper than ``ground_angle_deg`` lies on a face, not on the
            ground. Physics: the next beam up meets anything standing on the ground in front of
            its own ground point at most ``rho * d theta`` higher (a few cm near the sensor, 0.2 m
            only beyond ~30 m for the HDL-64E), so such a rise means the pixel itself is the
            lowest visible row of an object -- as when a car is seen just over a crest in the
            road, where the long jump from the crest to the car's lowest row looks like rising
            road. Applied beyond ``ground_face_foot_m`` only.
        ground_face_foot_m: horizontal distance (m) beyond which ``ground_face_foot`` applies.
            Nearer, ground is seen right under overhangs (a car body, a hedge), whose underside
            rises steeply above it; beyond ``overhang * sensor height / clearance`` no beam can
            reach the ground under one (~9 m for a car's 1 m overhang at 0.2 m clearance, ~17 m
            for a 2 m hedge), so 20 m. Measured on SemanticKITTI: the rule everywhere cost 0.6
            points of ground recall, mostly parking under cars at 5-20 m; beyond 20 m, 0.2 points
            (the row right in front of far faces). Object recall on KITTI boxes 94.7 -> 100 %
            together with ``rings_from_order``, ``skip_ground_px`` and ``max_gap_px`` 3 (on the
            SemanticKITTI instances 72 -> 86 %).
        rings_from_order: when no ``rings`` are given, recover them from the order of the points
            if the scan is stored ring by ring (KITTI / SemanticKITTI ``.bin``: the azimuth sweeps
            once per laser; :func:`~drive_segment_ros.proposals.range_image.rings_from_scan_order`);
            otherwise (firing-order or shuffled clouds) rows are elevation bins. Elevation bins
            mix the HDL-64E's rings: a laser's elevation seen from the origin moves by ~0.5 deg
            between 15 and 40 m, more than the 0.33 deg between neighbouring lasers.
        rows, fov_up_deg, fov_down_deg: range-image rows and vertical field of view (deg) used
            when the rings are unknown (rows from elevation bins).
        cols: range-image columns over 360 deg of azimuth; 0 = estimated from the scan (points
            per row divided by the covered fraction of the circle).
        max_gap_px: left / right neighbours are the next occupied pixel within this many
            columns (bridges missing returns: a dark car 50 m away returns only part of the
            pulses; 3, i.e. two missing firings, 0.5 deg for the HDL-64E).
        max_gap_rows: up / down neighbours are the next occupied pixel within this many rows (2:
            one missing ring; with true rings a larger vertical bridge joins objects stacked in
            depth, such as parked cars in a row: on the SemanticKITTI instances 3 rows merged 8
            of 36 objects, 2 rows 3).
        skip_ground_px: segment neighbours are the next occupied *non-ground* pixel within
            those gaps (a stray ground pixel inside an object, such as its lowest row seen over a
            crest, or a dropout next to it, does not cut the object in two).

    DBSCAN backend (``clustering.py``):
        ransac_distance_m, ransac_iterations: open3d ``segment_plane`` inlier distance / iterations.
        ground_max_tilt_deg: the RANSAC plane is accepted as ground only if its normal is within
            this angle of the z axis (otherwise no ground is removed).
        dbscan_eps_m, dbscan_min_points: open3d ``cluster_dbscan`` parameters.
        seed: random seed of RANSAC (reproducible results).
    """

    backend: str = "range_image"
    # common
    min_range_m: float = 1.0
    max_range_m: float = 120.0
    min_segment_size: int = 20
    max_segment_size: int = 1_000_000
    ground_cell_m: float = 4.0
    # range image (Bogoslavskyi & Stachniss)
    ground_angle_deg: float = 9.0
    segment_angle_deg: float = 10.0
    smooth_window: int = 7
    smoothing: str = "mean"
    ground_max_step_m: float = 0.2
    ground_near_m: float = 7.0
    ground_near_tol_m: float = 0.25
    ground_face_foot: bool = True
    ground_face_foot_m: float = 20.0
    rings_from_order: bool = True
    rows: int = 64
    cols: int = 0
    fov_up_deg: float = 2.0
    fov_down_deg: float = -24.9
    max_gap_px: int = 3
    max_gap_rows: int = 2
    skip_ground_px: bool = True
    # RANSAC + DBSCAN
    ransac_distance_m: float = 0.2
    ransac_iterations: int = 200
    ground_max_tilt_deg: float = 30.0
    dbscan_eps_m: float = 0.5
    dbscan_min_points: int = 5
    seed: int = 0

    CONFIG_NAME: ClassVar[str] = "proposals"
    SECTION: ClassVar[Optional[str]] = "proposals"

    def validate(self) -> "ProposalConfig":
        """Check every value; raise :class:`DriveSegmentError` (one line) on the first bad one."""
        if self.backend not in BACKENDS:
            raise DriveSegmentError(f"proposals: backend must be one of {BACKENDS}, got {self.backend!r}")
        self.check_field_types()  # every number finite, every int an integer (also when built directly)
        if not 0 <= self.min_range_m < self.max_range_m:
            raise DriveSegmentError(
                f"proposals: need 0 <= min_range_m < max_range_m, got {self.min_range_m}, {self.max_range_m}")
        if not 1 <= self.min_segment_size <= self.max_segment_size:
            raise DriveSegmentError(
                f"proposals: need 1 <= min_segment_size <= max_segment_size, got "
                f"{self.min_segment_size}, {self.max_segment_size}")
        if self.ground_cell_m <= 0:
            raise DriveSegmentError(f"proposals: ground_cell_m must be > 0, got {self.ground_cell_m}")
        if not 0 < self.ground_angle_deg < 90 or not 0 < self.segment_angle_deg < 90:
            raise DriveSegmentError("proposals: ground_angle_deg and segment_angle_deg must be in (0, 90)")
        if self.smooth_window != 1 and (self.smooth_window < 3 or self.smooth_window % 2 == 0):
            raise DriveSegmentError(f"proposals: smooth_window must be 1 or an odd integer >= 3, got {self.smooth_window}")
        if self.smoothing not in ("mean", "savgol"):
            raise DriveSegmentError(f"proposals: smoothing must be 'mean' or 'savgol', got {self.smoothing!r}")
        if self.ground_max_step_m < 0:
            raise DriveSegmentError(f"proposals: ground_max_step_m must be >= 0, got {self.ground_max_step_m}")
        if self.ground_face_foot_m < 0:
            raise DriveSegmentError(f"proposals: ground_face_foot_m must be >= 0, got {self.ground_face_foot_m}")
        if self.ground_near_m < 0 or self.ground_near_tol_m < 0:
            raise DriveSegmentError(
                f"proposals: ground_near_m and ground_near_tol_m must be >= 0, got {self.ground_near_m}, "
                f"{self.ground_near_tol_m}")
        if self.rows < 2 or self.cols < 0 or self.cols == 1:
            raise DriveSegmentError(f"proposals: need rows >= 2 and cols == 0 (auto) or >= 2, got {self.rows}, {self.cols}")
        if not -90 <= self.fov_down_deg < self.fov_up_deg <= 90:
            raise DriveSegmentError(
                f"proposals: need -90 <= fov_down_deg < fov_up_deg <= 90, got {self.fov_down_deg}, {self.fov_up_deg}")
        if self.max_gap_px < 1 or self.max_gap_rows < 1:
            raise DriveSegmentError(
                f"proposals: max_gap_px and max_gap_rows must be >= 1, got {self.max_gap_px}, {self.max_gap_rows}")
        if self.ransac_distance_m <= 0 or self.ransac_iterations < 1:
            raise DriveSegmentError("proposals: ransac_distance_m must be > 0 and ransac_iterations >= 1")
        if not 0 <= self.ground_max_tilt_deg <= 90:
            raise DriveSegmentError(f"proposals: ground_max_tilt_deg must be in [0, 90], got {self.ground_max_tilt_deg}")
        if self.dbscan_eps_m <= 0 or self.dbscan_min_points < 1:
            raise DriveSegmentError("proposals: dbscan_eps_m must be > 0 and dbscan_min_points >= 1")
        return self
