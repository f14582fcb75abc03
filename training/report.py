"""A self-contained HTML report (``report.html`` + PNGs beside it) for people to look at.

The report is built from sections of text, tables and images. Every ``<img src>`` / ``<a href>``
is a URL relative to the folder of ``report.html`` (not to the working directory), so the report
opens from anywhere and the output folder can be copied or zipped as a whole;
:func:`report_image_problems` checks that, and ``test/test_report.py`` also opens a report in
headless chromium and checks that every image decodes.
"""
from __future__ import annotations

import datetime as _dt
import html
import os
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import List, Optional, Sequence, Union
from urllib.parse import quote, unquote, urlsplit

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
h1{margin-bottom:0}.sub{color:#666;margin-top:.3em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:6px;vertical-align:top}figure img{max-width:660px;border:1px solid #ddd}
figcaption{font-size:.85em;color:#444;max-width:660px}.warn{background:#fff3cd;border:1px solid #e0c060;padding:.6em 1em}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
"""


@dataclass
class Figure:
    """An image file shown in the report.

    ``path`` is an ordinary filesystem path: absolute, or relative to the current working
    directory (as ``open()`` would read it) — NOT relative to the report. :func:`render_html`
    rewrites it relative to the report's folder.
    """

    path: Union[str, Path]
    caption: str = ""


@dataclass
class Table:
    """A table: header row + rows of cells (floats are formatted with ``float_fmt``)."""

    header: Sequence[str]
    rows: Sequence[Sequence[object]]
    caption: str = ""
    float_fmt: str = "{:.3f}"


@dataclass
class Section:
    """A titled block of paragraphs, tables and figures, rendered in that order."""

    title: str
    paragraphs: List[str] = field(default_factory=list)
    tables: List[Table] = field(default_factory=list)
    figures: List[Figure] = field(default_factory=list)
    warning: Optional[str] = None
    preformatted: Optional[str] = None


def _cell(value: object, fmt: str) -> str:
    if isinstance(value, float):
        return html.escape(fmt.format(value))
    return html.escape(str(value))


def _relative_url(path: Union[str, Path], report_dir: Path) -> str:
    """URL of the image file ``path`` (absolute or cwd-relative) relative to ``report_dir``.

    Raises:
        FileNotFoundError: ``path`` is not a file (a report must not show a broken image).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"report figure not found: {p} (paths are relative to the working directory {Path.cwd()})")
    rel = os.path.relpath(p.resolve(), report_dir.resolve())
    return quote(Path(rel).as_posix())


def render_html(title: str, sections: Sequence[Section], out_path: Union[str, Path], subtitle: str = "") -> Path:
    """Write ``out_path`` (HTML) from ``sections``.

    Figure paths (absolute or relative to the working directory) are written as URLs relative to
    ``out_path``'s folder, so the images load wherever the report is opened from.

    Returns:
        The path written.

    Raises:
        FileNotFoundError: a figure's image file does not exist.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p class='sub'>{html.escape(subtitle)} — generated {stamp}</p>",
    ]
    for sec in sections:
        parts.append(f"<h2>{html.escape(sec.title)}</h2>")
        if sec.warning:
            parts.append(f"<p class='warn'>{html.escape(sec.warning)}</p>")
        for para in sec.paragraphs:
            parts.append(f"<p>{html.escape(para)}</p>")
        if sec.preformatted:
            parts.append(f"<pre>{html.escape(sec.preformatted)}</pre>")
        for tab in sec.tables:
            parts.append("<table>")
            if tab.caption:
                parts.append(f"<caption>{html.escape(tab.caption)}</caption>")
            parts.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in tab.header) + "</tr>")
            for row in tab.rows:
                parts.append("<tr>" + "".join(f"<td>{_cell(c, tab.float_fmt)}</td>" for c in row) + "</tr>")
            parts.append("</table>")
        for fig in sec.figures:
            rel = html.escape(_relative_url(fig.path, out_path.parent))
            parts.append(
                f"<figure><a href='{rel}'><img src='{rel}' alt='{html.escape(fig.caption)}'></a>"
                f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    out_path.write_text("\n".join(parts), encoding="utf-8")
    return out_path


class _Sources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: List[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "img":
            self.sources.extend(v for k, v in attrs if k == "src" and v is not None)


def image_sources(report: Union[str, Path]) -> List[str]:
    """Every ``<img src>`` of the HTML file ``report``, in document order (as written)."""
    parser = _Sources()
    parser.feed(Path(report).read_text(encoding="utf-8"))
    return parser.sources


def report_image_problems(report: Union[str, Path]) -> List[str]:
    """Why each ``<img>`` of ``report`` would not load when the file is opened in a browser.

    A ``src`` must be a relative URL (no scheme, no leading ``/``) naming an existing file
    relative to the report's folder — resolved the way a browser resolves it, independent of the
    current working directory.

    Returns:
        One line per broken image (empty list: every image resolves).
    """
    report = Path(report)
    problems = []
    for src in image_sources(report):
        parts = urlsplit(src)
        if parts.scheme or parts.netloc or src.startswith("/"):
            problems.append(f"{src}: not a relative URL")
            continue
        target = report.parent / unquote(parts.path)
        if not target.is_file():
            problems.append(f"{src}: no file {target}")
    return problems
