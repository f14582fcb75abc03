"""The HTML report renders text, tables (formatted floats) and figures with relative paths."""
import numpy as np
import cv2

from drive_segment_training.report import Figure, Section, Table, render_html


def test_render_html_tables_figures_and_escaping(tmp_path):
    img = tmp_path / "figs" / "a.png"
    img.parent.mkdir()
    cv2.imwrite(str(img), np.zeros((4, 4, 3), np.uint8))
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
    assert "src='figs/a.png'" in text
    assert "not self-supervised" in text
