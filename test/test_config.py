"""Every configuration dataclass loads, validates and fails the same way (drive_segment_ros.config)."""
import dataclasses

import pytest

from drive_segment_ros.config import ConfigBase, load_yaml_mapping
from drive_segment_ros.inference.sliding_window import SlidingWindowConfig
from drive_segment_ros.models.segmenter import SegmenterConfig
from drive_segment_ros.projection import ProjectionConfig
from drive_segment_ros.proposals import ProposalConfig
from drive_segment_ros.types import DriveSegmentError
from drive_segment_training.augment import AugmentConfig
from drive_segment_training.demo import DemoConfig
from drive_segment_ros.pseudo_labeling import PseudoLabelConfig
from drive_segment_training.train_config import TrainConfig

# (class, an int field, a float field)
CONFIGS = [
    (ProposalConfig, "min_segment_size", "ground_angle_deg"),
    (ProjectionConfig, "min_pixels", "max_depth"),
    (SegmenterConfig, "n_classes", "dropout"),
    (PseudoLabelConfig, "k", None),
    (DemoConfig, "k", None),
    (AugmentConfig, "copy_paste_max_segments", "hflip_prob"),
    (TrainConfig, "batch_size", "poly_power"),
    (SlidingWindowConfig, "batch_size", None),
]
IDS = [c[0].__name__ for c in CONFIGS]


@pytest.mark.parametrize("cls, int_key, float_key", CONFIGS, ids=IDS)
def test_every_config_uses_the_one_base(cls, int_key, float_key):
    assert issubclass(cls, ConfigBase) and dataclasses.is_dataclass(cls)
    for name in ("from_dict", "from_yaml", "to_dict", "validate"):
        # nobody re-implements the loading; validate is the per-class hook
        if name != "validate":
            assert getattr(cls, name).__func__ is getattr(ConfigBase, name).__func__ if name != "to_dict" \
                else getattr(cls, name) is ConfigBase.to_dict, (cls, name)


@pytest.mark.parametrize("cls, int_key, float_key", CONFIGS, ids=IDS)
def test_unknown_key_is_one_clear_error(cls, int_key, float_key):
    with pytest.raises(DriveSegmentError, match=r"unknown keys \['no_such_key'\]") as err:
        cls.from_dict({"no_such_key": 1})
    assert str(err.value).startswith(cls.CONFIG_NAME + ":") and "\n" not in str(err.value)


@pytest.mark.parametrize("cls, int_key, float_key", CONFIGS, ids=IDS)
def test_bad_type_is_one_clear_error(cls, int_key, float_key):
    with pytest.raises(DriveSegmentError, match=f"{int_key} must be an integer"):
        cls.from_dict({int_key: "three"})
    with pytest.raises(DriveSegmentError, match=f"{int_key} must be an integer"):
        cls.from_dict({int_key: 3.5})
    if float_key is not None:
        with pytest.raises(DriveSegmentError, match=f"{float_key} must be a number"):
            cls.from_dict({float_key: "x"})
    with pytest.raises(DriveSegmentError, match="must be a mapping"):
        cls.from_dict([1, 2])


@pytest.mark.parametrize("cls, int_key, float_key", CONFIGS, ids=IDS)
def test_roundtrip_defaults_and_int_for_float(cls, int_key, float_key):
    default = cls.from_dict(None)
    assert cls.from_dict(default.to_dict()) == default
    if float_key is not None:  # an integer in YAML for a float field becomes a float
        value = int(getattr(default, float_key))
        cfg = cls.from_dict({float_key: value})
        assert isinstance(getattr(cfg, float_key), float) and getattr(cfg, float_key) == value


@pytest.mark.parametrize("cls, int_key, float_key", CONFIGS, ids=IDS)
def test_yaml_sections_unwrap_the_same_way(cls, int_key, float_key, tmp_path):
    value = getattr(cls.from_dict(None), int_key) + 1
    # a named section of a file holding several sections
    path = tmp_path / "several.yaml"
    path.write_text(f"other: {{x: 1}}\nmine:\n  {int_key}: {value}\n")
    if cls is not TrainConfig:  # TrainConfig's sections are its stages (teacher/student)
        assert getattr(cls.from_yaml(path, section="mine"), int_key) == value
    with pytest.raises(DriveSegmentError, match="section 'missing'|stage must be"):
        cls.from_yaml(path, section="missing")
    # flat file
    flat = tmp_path / "flat.yaml"
    flat.write_text(f"{int_key}: {value}\n")
    assert getattr(cls.from_yaml(flat), int_key) == value
    # nested under the class's own section name, as the sole key
    if cls.SECTION is not None:
        nested = tmp_path / "nested.yaml"
        nested.write_text(f"{cls.SECTION}:\n  {int_key}: {value}\n")
        assert getattr(cls.from_yaml(nested), int_key) == value
        assert getattr(cls.from_dict({cls.SECTION: {int_key: value}}), int_key) == value
    with pytest.raises(DriveSegmentError, match="not found"):
        cls.from_yaml(tmp_path / "missing.yaml")


def test_train_config_stage_section_overlays_top_level(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("batch_size: 3\nstudent: {batch_size: 5}\nteacher: {}\n")
    assert TrainConfig.from_yaml(path, "teacher").batch_size == 3
    assert TrainConfig.from_yaml(path, "student").batch_size == 5


def test_load_yaml_mapping_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1\n")
    with pytest.raises(DriveSegmentError, match="invalid YAML"):
        load_yaml_mapping(bad, "test config")
    bad.write_text("- 1\n")
    with pytest.raises(DriveSegmentError, match="mapping"):
        load_yaml_mapping(bad, "test config")
    bad.write_text("")
    assert load_yaml_mapping(bad, "test config") == {}
