"""A self-contained HTML report (``report.html`` + PNGs beside it) for people to look at.

The report is built from sections of text, tables and images; images are referenced by
relative path so the output folder can be copied or zipped as a whole.
"""
from __future__ import annotations

import datetime as _dt
import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Union

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
    """An image file shown in the report (path relative to the report or absolute)."""

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


def render_html(title: str, sections: Sequence[Section], out_path: Union[str, Path], subtitle: str = "") -> Path:
    """Write ``out_path`` (HTML) from ``sections``; figure paths are made relative to it.

    Returns:
        The path written.
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
            p = Path(fig.path)
            rel = os.path.relpath(p, out_path.parent) if p.is_absolute() else str(p)
            parts.append(
                f"<figure><a href='{html.escape(rel)}'><img src='{html.escape(rel)}' loading='lazy'></a>"
                f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    out_path.write_text("\n".join(parts), encoding="utf-8")
    return out_path
