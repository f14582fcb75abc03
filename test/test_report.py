"""The HTML report: text, tables (formatted floats), figures whose URLs resolve relative to the
report (wherever it is opened from), checked by parsing and in a real headless browser."""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from drive_segment_training.report import Figure, Section, Table, image_sources, render_html, report_image_problems
from report_checks import chromium_or_skip, decoded_images


def _png(path: Path, shape=(12, 20), value=128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full(shape + (3,), value, np.uint8)
    img[: shape[0] // 2] = 255 - value
    assert cv2.imwrite(str(path), img)
    return path


def test_render_html_tables_figures_and_escaping(tmp_path):
    img = _png(tmp_path / "figs" / "a.png", (4, 4))
    out = render_html(
        "Demo <report>",
        [
            Section(
                "Metrics",
                paragraphs=["backbone: mobilenetv2 & co"],
                tables=[Table(["method", "mIoU"], [["student", 0.12345], ["baseline", 7]])],
                figures=[Figure(img, "overlay")],
                warning="not self-supervised",
            )
        ],
        tmp_path / "report.html",
    )
    text = out.read_text()
    assert "Demo &lt;report&gt;" in text
    assert "mobilenetv2 &amp; co" in text
    assert "<td>0.123</td>" in text and "<td>7</td>" in text
    assert image_sources(out) == ["figs/a.png"]
    assert "not self-supervised" in text


def _cwd_relative_report(tmp_path, monkeypatch) -> Path:
    """What the demo does: figure paths relative to the working directory, report in a sub-folder."""
    monkeypatch.chdir(tmp_path)
    out = Path("demo_out")  # relative, like `drive-segment demo --out demo_out`
    figs = [
        _png(out / "eval" / "confusion_student_hungarian.png", (30, 40), 40),
        _png(out / "proposals" / "kitti 000008_overlay.png", (16, 48), 200),  # a space: URL-quoted
    ]
    return render_html(
        "report", [Section("figures", figures=[Figure(p, p.stem) for p in figs])], out / "report.html"
    )


def test_image_urls_resolve_relative_to_the_report(tmp_path, monkeypatch):
    report = _cwd_relative_report(tmp_path, monkeypatch)
    assert image_sources(report) == ["eval/confusion_student_hungarian.png", "proposals/kitti%20000008_overlay.png"]
    assert report_image_problems(report) == []
    # ... from any working directory, as a browser resolves them
    monkeypatch.chdir(tmp_path / "demo_out" / "eval")
    assert report_image_problems(tmp_path / "demo_out" / "report.html") == []


def test_report_image_problems_finds_broken_sources(tmp_path):
    _png(tmp_path / "ok.png")
    report = tmp_path / "r.html"
    report.write_text(
        "<html><body><img src='ok.png'><img src='out/missing.png'><img src='/abs/x.png'>"
        "<img src='http://example.invalid/a.png'></body></html>"
    )
    problems = report_image_problems(report)
    assert len(problems) == 3
    assert problems[0].startswith("out/missing.png")


def test_missing_figure_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        render_html("r", [Section("s", figures=[Figure(tmp_path / "nope.png")])], tmp_path / "r.html")


def test_every_image_decodes_in_headless_chromium(tmp_path, monkeypatch):
    report = _cwd_relative_report(tmp_path, monkeypatch).resolve()
    browser = chromium_or_skip()
    monkeypatch.chdir(os.sep)  # the browser opens the file by absolute URL; cwd must not matter
    images = decoded_images(report, browser)
    assert [i["src"] for i in images] == image_sources(report)
    sizes = {i["src"]: (i["naturalWidth"], i["naturalHeight"]) for i in images}
    assert sizes == {"eval/confusion_student_hungarian.png": (40, 30), "proposals/kitti%20000008_overlay.png": (48, 16)}


def test_browser_check_sees_a_broken_image(tmp_path):
    """The browser check itself can fail: an image that does not decode reports width 0."""
    browser = chromium_or_skip()
    _png(tmp_path / "good.png", (8, 8))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    report = tmp_path / "r.html"
    report.write_text("<html><body><img src='good.png'><img src='bad.png'><img src='gone.png'></body></html>")
    widths = [i["naturalWidth"] for i in decoded_images(report, browser)]
    assert widths == [8, 0, 0]
