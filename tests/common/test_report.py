"""report.html: strings from configs and data are escaped, the report's own folds survive."""

import re

import pytest

from winnow.common.report import markdown_table, render_html
from winnow.common.runs import RunDir

SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def _body(page: str) -> str:
    return page.split("<body>", 1)[1]


@pytest.mark.parametrize(
    "markdown",
    [
        f"# run {SCRIPT}\n",
        f"model path {SCRIPT} in a sentence\n",
        f"model `{SCRIPT}` in a code span\n",
        markdown_table([{"system": SCRIPT, "ndcg": 0.5}]),
        f"- a list item naming {SCRIPT}\n",
    ],
)
def test_a_script_from_a_config_string_is_shown_escaped(markdown, tmp_path):
    body = _body(render_html(markdown, tmp_path, title=f"demo {SCRIPT}"))
    assert "<script" not in body
    assert ESCAPED in body


def test_tags_with_attributes_and_unsafe_links_do_not_pass(tmp_path):
    markdown = (
        "<img src=x onerror=alert(1)> <b onclick=x>bold</b>\n\n"
        "[a](javascript:alert(1)) [b](&#106;avascript:alert(1)) [c](https://example.org)\n"
    )
    body = _body(render_html(markdown, tmp_path, title="t"))
    assert "<img" not in body and "<b " not in body and "onerror=alert(1)&gt;" in body
    assert re.findall(r'href="([^"]*)"', body) == ["https://example.org"]


def test_the_reports_own_fold_stays_html_and_its_table_renders(tmp_path):
    table = markdown_table([{"router": "<i>x</i>", "accuracy": 0.5}])
    markdown = f"<details><summary>All routers</summary>\n\n{table}\n</details>\n"
    body = _body(render_html(markdown, tmp_path, title="t"))
    assert "<details><summary>All routers</summary>" in body and "</details>" in body
    assert "<table>" in body and "&lt;i&gt;x&lt;/i&gt;" in body


def test_an_image_outside_the_run_folder_is_refused(tmp_path):
    (tmp_path / "secret.png").write_bytes(b"\x89PNG")
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(FileNotFoundError, match="not in"):
        render_html("![x](../secret.png)\n", run, title="t")


def test_a_run_report_escapes_a_config_string(tmp_path):
    run = RunDir("escape", root=tmp_path)
    page = run.write_report(f"# winnow\n\nstudent `{SCRIPT}` at {SCRIPT}\n", title=SCRIPT)
    html = page.read_text()
    assert "<script" not in html and ESCAPED in html
    assert SCRIPT in (run.path / "report.md").read_text()  # the markdown keeps the string as is
