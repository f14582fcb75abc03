"""The main job end to end on the real samples, at tiny settings (the full run is `make demo`)."""
import json

import pytest


@pytest.mark.slow
def test_demo_runs_every_stage_and_writes_report(data_root, tmp_path):
    from drive_segment_training.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        data=str(data_root),
        out=str(tmp_path / "demo"),
        k=8,
        teacher_iterations=2,
        student_iterations=2,
        crop_size=(128, 256),
        eval_size=(192, 288),
        batch_size=2,
        device="cpu",
    )
    report = run_demo(cfg)
    html = report.read_text()
    # every stage left its mark in the report
    for needle in ("mobilenetv2_deepsort", "NOT", "baseline", "teacher", "student", "Hungarian", "confusion"):
        assert needle in html, needle
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["k"] == 8 and summary["self_supervised"] is False
    for tag in ("baseline", "teacher", "student"):
        m = summary["metrics"][tag]["hungarian"]
        assert 0.0 <= m["mIoU"] <= 1.0 and 0.0 <= m["pixel_accuracy"] <= 1.0
    # the on-vehicle path: the ONNX export matches torch through the same SegmentationModel
    deploy = summary["deploy"]
    assert deploy["max_abs_diff"] < 1e-3
    assert deploy["ort_vs_torch_pixel_agreement"] > 0.999
    assert abs(deploy["ort_mIoU"] - deploy["torch_mIoU"]) < 1e-3
    # images referenced by the report exist
    out = tmp_path / "demo"
    assert list((out / "proposals").glob("*_overlay.png"))
    assert list((out / "pseudo" / "previews").glob("*.png"))
    assert (out / "eval" / "confusion_student_hungarian.png").is_file()
    assert len(list((out / "predictions").glob("*_student.png"))) == 7
