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
    """Convert report markdown to HTML, embedding every relative PNG as a data URI."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code"])
    base = Path(base_dir)

    def embed(match: re.Match[str]) -> str:
        source = match.group(1)
        if re.match(r"^[a-z]+:", source):
            return match.group(0)
        image = base / source
        if not image.is_file():
            raise FileNotFoundError(f"report refers to {source}, which is not in {base}")
        encoded = base64.b64encode(image.read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{encoded}"'

    body = re.sub(r'src="([^"]+\.png)"', embed, body)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )
