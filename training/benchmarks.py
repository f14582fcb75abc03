"""Loaders of the labelled driving benchmarks on which Drive&Segment is measured, in their official layouts.

Each loader lists ``(image, label)`` file pairs without reading them (so evaluation can stream
image by image) and converts a label file into the ids of an evaluation label set
(:mod:`drive_segment_training.labels`: ``cityscapes19`` = trainIds, ``cityscapes27`` =
labelIds 7..33 as IIC / PiCIE / STEGO / Drive&Segment report them; 255 = ignore).

=====================  ==========================================================================================
``--dataset``          layout under ``--root`` (checked against the dataset authors' README / devkit)
=====================  ==========================================================================================
``cityscapes``         ``leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png`` +
                       ``gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png`` (or
                       ``_gtFine_labelTrainIds.png`` from ``createTrainIdLabelImgs.py``; 19 classes only)
``kitti-semantics``    ``training/image_2/NNNNNN_10.png`` + ``training/semantic/NNNNNN_10.png`` (labelIds)
``acdc``               ``rgb_anon/{condition}/{split}/{sequence}/*_rgb_anon.png`` +
                       ``gt/{condition}/{split}/{sequence}/*_gt_labelIds.png``; conditions fog, night, rain, snow
``dark-zurich``        ``rgb_anon/val/night/{sequence}/*_rgb_anon.png`` + ``gt/val/night/{sequence}/*_gt_labelIds.png``
``nighttime-driving``  ``leftImg8bit/test/night/*_leftImg8bit.png`` +
                       ``gtCoarse_daytime_trainvaltest/test/night/*_gtCoarse_labelIds.png``
``waymo``              ``frame.json`` + per-camera JPEG and Waymo semantic PNG (this project's sample layout)
=====================  ==========================================================================================

Every label format except Waymo uses the Cityscapes ``labelIds`` of
``cityscapesscripts/helpers/labels.py`` (ids 0..33); Waymo classes are mapped with
``config/waymo_to_cityscapes.yaml``. :func:`detect_dataset` tells the layout of a folder;
:func:`find_datasets` finds every layout present under a root (for ``--suite paper``).

All of these datasets are for non-commercial research use only; each loader names its terms.
None of them is shipped with this package: download them from their owners.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from drive_segment_ros.types import IGNORE_INDEX, DriveSegmentError
from drive_segment_training.labels import (
    cityscapes_labelid_to_27, cityscapes_labelid_to_trainid, label_set as get_label_set, load_waymo_mapping)

LOG = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: ACDC adverse conditions, in the order the Drive&Segment paper reports them.
ACDC_CONDITIONS = ("night", "fog", "rain", "snow")


@dataclass(frozen=True)
class Sample:
    """One labelled image of a benchmark.

    Attributes:
        name: identifier unique within the dataset (file stem without the layout suffix).
        image: path of the RGB image.
        label: path of the label PNG.
        label_kind: ``"labelIds"`` (Cityscapes ids 0..33), ``"trainIds"`` (0..18, 255) or
            ``"waymo"`` (Waymo camera classes 0..28).
        group: sub-set the image belongs to (ACDC condition; ``""`` otherwise).
    """

    name: str
    image: Path
    label: Path
    label_kind: str = "labelIds"
    group: str = ""


@dataclass
class BenchmarkDataset:
    """A benchmark split as a list of :class:`Sample` (files are read by :meth:`load`).

    Attributes:
        name: loader name (``cityscapes``, ``kitti-semantics``, ...).
        root: dataset root folder.
        split: split evaluated (``val``, ``test``, ``training``).
        samples: labelled images in a deterministic (sorted) order.
        groups: names of the sub-sets reported separately (ACDC conditions), else ``()``.
        licence: the dataset's terms of use, one line.
        citation: what to cite.
    """

    name: str
    root: Path
    split: str
    samples: List[Sample]
    groups: Tuple[str, ...] = ()
    licence: str = ""
    citation: str = ""
    waymo_mapping: Optional[PathLike] = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.samples)

    def label_sets(self) -> Tuple[str, ...]:
        """Label sets this dataset's labels can be scored in (27 needs ``labelIds`` files)."""
        if all(s.label_kind == "labelIds" for s in self.samples):
            return ("cityscapes19", "cityscapes27")
        if all(s.label_kind == "waymo" for s in self.samples):
            return ("cityscapes19", "cityscapes27")
        return ("cityscapes19",)

    def load(self, sample: Sample, label_sets: Sequence[str] = ("cityscapes19",)) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        """Read one sample.

        Args:
            sample: an element of :attr:`samples`.
            label_sets: evaluation label sets wanted (``cityscapes19`` / ``cityscapes27``).

        Returns:
            ``(rgb (H, W, 3) uint8, {label_set: gt (H, W) uint8})``, gt in the label set's ids
            with 255 = ignore.

        Raises:
            DriveSegmentError: unreadable image or label (the file is named), a label whose size
                differs from the image, or ``cityscapes27`` asked of a trainId label.
        """
        bgr = cv2.imread(str(sample.image), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DriveSegmentError(f"{self.name}: cannot read image {sample.image}")
        raw = cv2.imread(str(sample.label), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise DriveSegmentError(f"{self.name}: missing or unreadable label file {sample.label} (for image {sample.image})")
        if raw.ndim == 3:
            raw = raw[..., 0]  # a grey label saved as 3 identical channels
        if raw.dtype != np.uint8:
            raise DriveSegmentError(f"{self.name}: label file {sample.label} is {raw.dtype}, expected 8-bit class ids")
        if raw.shape != bgr.shape[:2]:
            raise DriveSegmentError(
                f"{self.name}: label file {sample.label} is {raw.shape[1]}x{raw.shape[0]} but image {sample.image} "
                f"is {bgr.shape[1]}x{bgr.shape[0]}"
            )
        gts = {ls: label_lut(sample.label_kind, ls, self.waymo_mapping)[raw] for ls in label_sets}
        return np.ascontiguousarray(bgr[..., ::-1]), gts


_LUT_CACHE: Dict[Tuple[str, str, str], np.ndarray] = {}


def label_lut(label_kind: str, label_set: str, waymo_mapping: Optional[PathLike] = None) -> np.ndarray:
    """(256,) uint8 lookup table from a raw label file's values to an evaluation label set.

    Uses the lookup tables of :mod:`drive_segment_training.labels` (the one definition of the
    Cityscapes classes): ``labelIds`` -> trainIds / 27-class ids, ``waymo`` -> the configured
    Waymo mapping, ``trainIds`` -> identity for ``cityscapes19``.

    Raises:
        DriveSegmentError: unknown label set or kind, or ``cityscapes27`` from trainIds (that
            file has lost the 8 classes that only the 27-class set evaluates).
    """
    names, _ = get_label_set(label_set)
    key_set = "cityscapes19" if len(names) == 19 else "cityscapes27"
    key = (label_kind, key_set, str(waymo_mapping))
    if key in _LUT_CACHE:
        return _LUT_CACHE[key]
    if label_kind == "labelIds":
        lut = cityscapes_labelid_to_trainid() if key_set == "cityscapes19" else cityscapes_labelid_to_27()
    elif label_kind == "trainIds":
        if key_set != "cityscapes19":
            raise DriveSegmentError("the 27-class evaluation needs *_labelIds.png label files; trainId files hold 19 classes only")
        lut = np.full(256, IGNORE_INDEX, np.uint8)
        lut[:19] = np.arange(19, dtype=np.uint8)
    elif label_kind == "waymo":
        lut = load_waymo_mapping(waymo_mapping, key_set)
    else:
        raise DriveSegmentError(f"unknown label kind {label_kind!r}")
    _LUT_CACHE[key] = lut
    return lut


# --------------------------------------------------------------------------------------------
# loaders, one per official layout
# --------------------------------------------------------------------------------------------
def _find_label(dataset: str, base: Path, label_suffixes: Sequence[Tuple[str, str]], image: Path) -> Tuple[Path, str]:
    """``(label path, kind)``: ``{base}{suffix}`` for the first ``(suffix, kind)`` that exists.

    Raises:
        DriveSegmentError: none exists (the file of the first suffix is named, with ``image``).
    """
    for suffix, kind in label_suffixes:
        label = base.with_name(base.name + suffix)
        if label.is_file():
            return label, kind
    expected = base.with_name(base.name + label_suffixes[0][0])
    raise DriveSegmentError(f"{dataset}: missing label file {expected} for image {image}")


def _pair_files(
    dataset: str,
    image_dir: Path,
    image_suffix: str,
    label_dir: Path,
    label_suffixes: Sequence[Tuple[str, str]],
    group: str = "",
    recursive: bool = True,
) -> List[Sample]:
    """Pair every ``*{image_suffix}`` under ``image_dir`` with its label under ``label_dir``.

    The label keeps the image's relative folder; its name is the image stem (without
    ``image_suffix``) plus the first of ``label_suffixes`` (``(suffix, kind)``) that exists.

    Raises:
        DriveSegmentError: no image, or an image without a label (the expected file is named).
    """
    if not image_dir.is_dir():
        raise DriveSegmentError(f"{dataset}: image folder {image_dir} not found")
    pattern = f"**/*{image_suffix}" if recursive else f"*{image_suffix}"
    images = sorted(image_dir.glob(pattern))
    if not images:
        raise DriveSegmentError(f"{dataset}: no *{image_suffix} images under {image_dir}")
    out = []
    for img in images:
        rel = img.relative_to(image_dir)
        stem = img.name[: -len(image_suffix)]
        label, kind = _find_label(dataset, label_dir / rel.parent / stem, label_suffixes, img)
        name = f"{rel.parent.as_posix()}/{stem}" if rel.parent != Path(".") else stem
        out.append(Sample(name=name, image=img, label=label, label_kind=kind, group=group))
    return out


def _listed_samples(dataset: str, root: Path, list_file: Path, image_suffix: str,
                    label_suffixes: Sequence[Tuple[str, str]], prefix: str = "") -> List[Sample]:
    """Samples of an official file list (one ``{entry}`` per line; Dark Zurich devkit layout:
    ``rgb_anon/{entry}{image_suffix}`` + ``gt/{entry}{label suffix}``).

    Names are the entries without ``prefix``.

    Raises:
        DriveSegmentError: an empty list, or a listed image / label that is missing (named).
    """
    entries = [ln.strip() for ln in list_file.read_text().splitlines() if ln.strip()]
    if not entries:
        raise DriveSegmentError(f"{dataset}: list file {list_file} names no image")
    out = []
    for entry in entries:
        image = root / "rgb_anon" / f"{entry}{image_suffix}"
        if not image.is_file():
            raise DriveSegmentError(f"{dataset}: missing image file {image} listed in {list_file}")
        label, kind = _find_label(dataset, root / "gt" / entry, label_suffixes, image)
        name = entry[len(prefix):] if prefix and entry.startswith(prefix) else entry
        out.append(Sample(name=name, image=image, label=label, label_kind=kind))
    return out


CITYSCAPES_LICENCE = ("Cityscapes terms of use: non-commercial research and teaching only, no redistribution; "
                      "cite Cordts et al., CVPR 2016 (www.cityscapes-dataset.com)")


def load_cityscapes(root: PathLike, split: str = "val") -> BenchmarkDataset:
    """Cityscapes, fine annotations.

    Layout (``mcordts/cityscapesScripts`` README, "Dataset Structure":
    ``{root}/{type}/{split}/{city}/{city}_{seq:0>6}_{frame:0>6}_{type}{ext}``)::

        root/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
        root/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png
                                            (or ..._gtFine_labelTrainIds.png, 19 classes only)

    ``val`` has 500 images (the split every unsupervised-segmentation paper reports).

    Licence: :data:`CITYSCAPES_LICENCE`.
    """
    root = Path(root)
    samples = _pair_files(
        "cityscapes", root / "leftImg8bit" / split, "_leftImg8bit.png", root / "gtFine" / split,
        [("_gtFine_labelIds.png", "labelIds"), ("_gtFine_labelTrainIds.png", "trainIds")],
    )
    return BenchmarkDataset("cityscapes", root, split, samples, licence=CITYSCAPES_LICENCE,
                            citation="Cordts et al., The Cityscapes Dataset for Semantic Urban Scene Understanding, CVPR 2016")


def load_kitti_semantics(root: PathLike, split: str = "training") -> BenchmarkDataset:
    """KITTI pixel-level semantic segmentation benchmark (KITTI 2015 segmentation format).

    Layout (KITTI semantics devkit README, "Dataset description")::

        root/training/image_2/NNNNNN_10.png
        root/training/semantic/NNNNNN_10.png      uint8 Cityscapes labelIds

    Only ``training`` (200 images) has public labels; the devkit states the label ids follow
    the Cityscapes definitions, so both the 19- and the 27-class sets apply.

    Licence: CC BY-NC-SA 3.0; cite Geiger et al. CVPR 2012 and Alhaija et al. IJCV 2018.
    """
    root = Path(root)
    if split != "training":
        raise DriveSegmentError(f"kitti-semantics: only the 'training' split has labels, got split {split!r}")
    samples = _pair_files("kitti-semantics", root / "training" / "image_2", "_10.png", root / "training" / "semantic",
                          [("_10.png", "labelIds")], recursive=False)
    return BenchmarkDataset("kitti-semantics", root, split, samples,
                            licence="CC BY-NC-SA 3.0 (non-commercial); cite Geiger et al. CVPR 2012, Alhaija et al. IJCV 2018",
                            citation="Alhaija et al., Augmented Reality Meets Computer Vision, IJCV 2018")


def load_acdc(root: PathLike, split: str = "val", conditions: Sequence[str] = ACDC_CONDITIONS) -> BenchmarkDataset:
    """ACDC (Adverse Conditions Dataset with Correspondences), per condition.

    Layout (ACDC downloads ``rgb_anon_trainvaltest.zip`` + ``gt_trainval.zip``; checked against
    the ACDC authors' own instructions, ``SysCV/CISS`` README "Datasets" (Sakaridis et al.: the
    zips extract to ``rgb_anon/`` and ``gt/`` "structured as ``condition/split/sequence/``",
    labels ``*_labelTrainIds.png``), and the mmsegmentation readers, e.g. ``w1oves/Rein``
    ``configs/_base_/datasets/*-acdc_1024x1024.py``: ``rgb_anon/{cond}/{split}``,
    ``gt/{cond}/{split}``, suffixes ``_rgb_anon.png`` / ``_gt_labelTrainIds.png``)::

        root/rgb_anon/{condition}/{split}/{sequence}/{name}_rgb_anon.png
        root/gt/{condition}/{split}/{sequence}/{name}_gt_labelIds.png  (or _gt_labelTrainIds.png)

    conditions ``fog``, ``night``, ``rain``, ``snow`` (those present are used; each is scored
    with its own matching, plus the mean, as the paper reports ACDC). ``val`` has 100 / 106 /
    100 / 100 images per condition; ``test`` labels are not public.

    Licence: ACDC terms of use, non-commercial research only; cite Sakaridis et al., ICCV 2021.
    """
    root = Path(root)
    samples: List[Sample] = []
    present = []
    for cond in conditions:
        if not (root / "rgb_anon" / cond / split).is_dir():
            continue
        present.append(cond)
        samples += _pair_files(
            "acdc", root / "rgb_anon" / cond / split, "_rgb_anon.png", root / "gt" / cond / split,
            [("_gt_labelIds.png", "labelIds"), ("_gt_labelTrainIds.png", "trainIds")], group=cond,
        )
    if not samples:
        raise DriveSegmentError(f"acdc: no rgb_anon/{{{','.join(conditions)}}}/{split} folder under {root}")
    samples = [Sample(f"{s.group}/{s.name}", s.image, s.label, s.label_kind, s.group) for s in samples]
    return BenchmarkDataset("acdc", root, split, samples, groups=tuple(present),
                            licence="ACDC terms of use: non-commercial research only; cite Sakaridis et al., ICCV 2021",
                            citation="Sakaridis et al., ACDC: The Adverse Conditions Dataset with Correspondences, ICCV 2021")


def load_dark_zurich(root: PathLike, split: str = "val") -> BenchmarkDataset:
    """Dark Zurich, night images with labels.

    Layout (``Dark_Zurich_val_anon.zip``; checked against the Dark Zurich authors' own devkit,
    ``sakaridis/MGCDA``: ``my_gen_ds_info_Dark_Zurich_val_anon.m`` reads the list
    ``lists_file_names/val_filenames.txt`` and the images ``rgb_anon/{entry}_rgb_anon.png``;
    ``Evaluation/eval_acc.m`` the labels ``gt/{entry}_gt_labelTrainIds.png``; entries are
    ``val/night/{sequence}/{sequence}_frame_NNNNNN``; also mmsegmentation's
    ``DarkZurichDataset`` and ``sssegmentation`` ``darkzurich.py``)::

        root/lists_file_names/{split}_filenames.txt     (used when present: the official list)
        root/rgb_anon/val/night/{sequence}/{sequence}_frame_NNNNNN_rgb_anon.png
        root/gt/val/night/{sequence}/{sequence}_frame_NNNNNN_gt_labelIds.png (or _gt_labelTrainIds.png)

    ``val`` has 50 labelled night images (sequence ``GOPR0356``); the 151 ``test`` labels are
    held by the benchmark server. With the list file, exactly its entries are evaluated (a
    listed image or label that is missing is an error naming it); without it, every night image
    under ``rgb_anon/{split}/night``.

    Licence: Dark Zurich terms, non-commercial research only; cite Sakaridis et al., ICCV 2019.
    """
    root = Path(root)
    suffixes = [("_gt_labelIds.png", "labelIds"), ("_gt_labelTrainIds.png", "trainIds")]
    listed = root / "lists_file_names" / f"{split}_filenames.txt"
    if listed.is_file():
        samples = _listed_samples("dark-zurich", root, listed, "_rgb_anon.png", suffixes, prefix=f"{split}/night/")
    else:
        samples = _pair_files("dark-zurich", root / "rgb_anon" / split / "night", "_rgb_anon.png",
                              root / "gt" / split / "night", suffixes)
    return BenchmarkDataset("dark-zurich", root, split, samples,
                            licence="Dark Zurich terms: non-commercial research only; cite Sakaridis et al., ICCV 2019",
                            citation="Sakaridis et al., Guided Curriculum Model Adaptation and Uncertainty-Aware Evaluation, ICCV 2019")


def load_nighttime_driving(root: PathLike, split: str = "test") -> BenchmarkDataset:
    """Nighttime Driving test set (50 coarsely annotated night images, Cityscapes classes).

    Layout (``NighttimeDrivingTest.zip``; checked against its authors' own file lists in
    ``sakaridis/MGCDA`` (same lab, Dai & Van Gool / Sakaridis): ``data/NighttimeDrivingTest_lists_file_names/``
    ``leftImg8bit_filenames.txt`` = ``leftImg8bit/test/night/{name}_leftImg8bit.png`` and
    ``gt_filenames.txt`` = ``gtCoarse_daytime_trainvaltest/test/night/{name}_gtCoarse_labelTrainIds.png``,
    50 images named like ``0_frame_0075``; also mmsegmentation ``NightDrivingDataset`` configs and
    ``sssegmentation`` ``nighttimedriving.py``)::

        root/leftImg8bit/test/night/{name}_leftImg8bit.png
        root/gtCoarse_daytime_trainvaltest/test/night/{name}_gtCoarse_labelIds.png (or _gtCoarse_labelTrainIds.png)

    Licence: non-commercial research only; cite Dai and Van Gool, ITSC 2018.
    """
    root = Path(root)
    samples = _pair_files(
        "nighttime-driving", root / "leftImg8bit" / split / "night", "_leftImg8bit.png",
        root / "gtCoarse_daytime_trainvaltest" / split / "night",
        [("_gtCoarse_labelIds.png", "labelIds"), ("_gtCoarse_labelTrainIds.png", "trainIds")],
    )
    return BenchmarkDataset("nighttime-driving", root, split, samples,
                            licence="non-commercial research only; cite Dai & Van Gool, ITSC 2018",
                            citation="Dai and Van Gool, Dark Model Adaptation, ITSC 2018")


def load_waymo(root: PathLike, split: str = "val", mapping: Optional[PathLike] = None) -> BenchmarkDataset:
    """Waymo Open Dataset camera-segmentation frame in this project's sample layout.

    Layout: ``root/frame.json`` with ``cameras.{NAME}.image_file`` / ``semantic_file`` (uint8
    PNG, Waymo's 29 camera classes) -- the same files
    :func:`drive_segment_training.labels.load_waymo_eval` reads; labels are mapped to Cityscapes
    with ``config/waymo_to_cityscapes.yaml`` (or ``mapping``). Cameras without a semantic file
    are skipped. ``split`` is ignored.

    Licence: Waymo Open Dataset licence, non-commercial.
    """
    root = Path(root)
    meta_path = root / "frame.json"
    if not meta_path.is_file():
        raise DriveSegmentError(f"waymo: {root} has no frame.json")
    meta = json.loads(meta_path.read_text())
    samples = []
    for name, cam in (meta.get("cameras") or {}).items():
        if not cam.get("semantic_file"):
            continue
        label = root / cam["semantic_file"]
        if not label.is_file():
            raise DriveSegmentError(f"waymo: missing label file {label} for camera {name}")
        samples.append(Sample(name=name, image=root / cam["image_file"], label=label, label_kind="waymo"))
    if not samples:
        raise DriveSegmentError(f"waymo: no labelled camera in {meta_path}")
    return BenchmarkDataset("waymo", root, split, samples, waymo_mapping=mapping,
                            licence="Waymo Open Dataset licence (non-commercial)",
                            citation="Mei et al., Waymo Open Dataset: Panoramic Video Panoptic Segmentation, ECCV 2022")


#: name -> (loader, default split, marker paths whose presence identifies the layout)
LOADERS: Dict[str, Tuple[Callable[..., BenchmarkDataset], str, Tuple[str, ...]]] = {
    "waymo": (load_waymo, "val", ("frame.json",)),
    "cityscapes": (load_cityscapes, "val", ("leftImg8bit", "gtFine")),
    "nighttime-driving": (load_nighttime_driving, "test", ("leftImg8bit/test/night", "gtCoarse_daytime_trainvaltest")),
    "dark-zurich": (load_dark_zurich, "val", ("rgb_anon/val/night", "gt/val/night")),
    "acdc": (load_acdc, "val", ("rgb_anon", "gt")),
    "kitti-semantics": (load_kitti_semantics, "training", ("training/image_2", "training/semantic")),
}
DATASETS = tuple(LOADERS)


def _acdc_like(root: Path) -> bool:
    return any((root / "rgb_anon" / c).is_dir() for c in ACDC_CONDITIONS)


def detect_dataset(root: PathLike) -> Optional[str]:
    """Name of the layout found directly in ``root``, or ``None``.

    Checks the marker folders of :data:`LOADERS` (ACDC needs ``rgb_anon/{condition}``, which
    tells it from Dark Zurich's ``rgb_anon/val``).
    """
    root = Path(root)
    for name, (_, _, markers) in LOADERS.items():
        if all((root / m).exists() for m in markers):
            if name == "acdc" and not _acdc_like(root):
                continue
            return name
    return None


def load_dataset(root: PathLike, name: Optional[str] = None, split: Optional[str] = None) -> BenchmarkDataset:
    """Load a benchmark by name (``None``: :func:`detect_dataset`).

    Args:
        root: dataset root.
        name: one of :data:`DATASETS` or ``None``.
        split: split to evaluate; ``None`` = the dataset's labelled evaluation split
            (cityscapes/acdc/dark-zurich ``val``, nighttime-driving ``test``, kitti ``training``).

    Raises:
        DriveSegmentError: root missing, unknown name, layout not recognised, or loader errors.
    """
    root = Path(root)
    if not root.is_dir():
        raise DriveSegmentError(f"dataset root {root} not found")
    if name is None:
        name = detect_dataset(root)
        if name is None:
            raise DriveSegmentError(f"cannot tell the dataset layout of {root}; give --dataset (one of {', '.join(DATASETS)})")
        LOG.info("detected %s layout in %s", name, root)
    if name not in LOADERS:
        raise DriveSegmentError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    loader, default_split, _ = LOADERS[name]
    ds = loader(root, split or default_split)
    LOG.info("%s (%s split): %d labelled images in %s", name, ds.split, len(ds), root)
    return ds


def find_datasets(root: PathLike, max_depth: int = 2) -> Dict[str, Path]:
    """Every benchmark layout present in ``root`` or its sub-folders (breadth-first, up to
    ``max_depth`` levels); the first (shallowest, then alphabetical) folder of each kind wins.

    Returns:
        ``{dataset name: folder}`` in :data:`DATASETS` order.
    """
    root = Path(root)
    if not root.is_dir():
        raise DriveSegmentError(f"dataset root {root} not found")
    found: Dict[str, Path] = {}
    level = [root]
    for _ in range(max_depth + 1):
        nxt = []
        for folder in level:
            kind = detect_dataset(folder)
            if kind is not None:
                found.setdefault(kind, folder)
                continue  # do not look inside a dataset
            nxt += sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        level = nxt
    return {k: found[k] for k in DATASETS if k in found}
