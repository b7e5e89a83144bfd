"""Markdown helpers for run reports and their conversion to one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ReportSection", "markdown_table", "render_html"]


@dataclass
class ReportSection:
    """A part of a report: markdown (plots referenced as ``plots/<name>.png``) and metrics."""

    markdown: str
    summary: dict[str, Any] = field(default_factory=dict)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       line-height: 1.5; color: #1d1d1f; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 4
) -> str:
    """A GitHub-flavoured markdown table; floats are shown with ``digits`` significant digits."""
    if not rows:
        return "_(no rows)_\n"
    columns = list(columns or rows[0].keys())

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.{digits}g}"
        return str(value).replace("|", "\\|")

    lines = [
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    lines += ["| " + " | ".join(cell(row.get(col, "")) for col in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_html(markdown_text: str, base_dir: str | Path, title: str) -> str:
    """Convert report markdown to HTML, embedding every relative PNG as a data URI.

    Report text carries strings from configs and data (model paths, run names, query text), so
    no raw HTML passes through: every ``<`` becomes ``&lt;`` except the bare ``<details>`` and
    ``<summary>`` tags reports fold tables with, and a link or image whose address names a
    scheme other than http(s) or mailto loses the address. A relative image must lie inside
    ``base_dir``.
    """
    import markdown

    extension = _safe_extension(Path(base_dir))
    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code", extension])
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


# The only raw HTML a report may hold: a fold of its own making, nothing from configs or data.
_OWN_TAGS = r"((?:</?details>|<summary>[^<>&]*</summary>)+)"
_SAFE_ADDRESS = re.compile(r"^(?:https?:|mailto:|[^:]*$)", re.IGNORECASE)


def _safe_extension(base: Path):
    """A Python-Markdown extension: raw HTML escaped, images embedded, unsafe links dropped."""
    from markdown.extensions import Extension
    from markdown.inlinepatterns import HtmlInlineProcessor
    from markdown.treeprocessors import Treeprocessor

    class Addresses(Treeprocessor):
        def run(self, root) -> None:
            for element in root.iter("a"):
                if not _SAFE_ADDRESS.match(element.get("href", "")):
                    del element.attrib["href"]
            for element in root.iter("img"):
                source = element.get("src", "")
                if not _SAFE_ADDRESS.match(source):
                    del element.attrib["src"]
                elif ":" not in source and source.lower().endswith(".png"):
                    element.set("src", _png_data_uri(base, source))

    class SafeReport(Extension):
        def extendMarkdown(self, md) -> None:
            md.preprocessors.deregister("html_block")
            md.inlinePatterns.deregister("html")
            md.inlinePatterns.register(HtmlInlineProcessor(_OWN_TAGS, md), "own_html", 90)
            md.treeprocessors.register(Addresses(md), "addresses", 5)  # after inline (20)

    return SafeReport()


def _png_data_uri(base: Path, source: str) -> str:
    image = (base / source).resolve()
    if not image.is_relative_to(base.resolve()) or not image.is_file():
        raise FileNotFoundError(f"report refers to {source}, which is not in {base}")
    return "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode("ascii")
