"""The committed reports' READMEs carry no hand-typed figures: every table and number sits
between ``generated`` markers and equals what ``scripts/readme_tables.py`` renders from the
documents beside it; the prose around them holds no measured value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
from attnbench.report import readme as readme_tables  # noqa: E402
from attnbench.report.readme_sources import READMES as SOURCES  # noqa: E402

READMES = list(SOURCES)
# a measured value: a decimal, or a number with a unit of time, memory, energy, power or rate
MEASURED = re.compile(r"(?<![\w.-])\d+\.\d+(?![\w.])|\b\d+(?:\.\d+)?\s*(?:ms|GiB|MiB|KiB|mJ|kJ|W|tokens/s)\b")
NOT_MEASURED = {"2507.07247"}  # an arXiv id


@pytest.mark.parametrize("readme", READMES)
def test_every_fragment_is_what_the_documents_render(readme):
    text = (ROOT / readme).read_text(encoding="utf-8")
    rendered, problems = readme_tables.rewrite(text, readme_tables.render(readme))
    assert problems == []
    if rendered != text:
        stale = [name for name, body in readme_tables.BLOCK.findall(text)
                 if body != readme_tables.render(readme)[name]]
        pytest.fail(f"{readme}: fragments {stale} differ from the documents; run python scripts/readme_tables.py")


@pytest.mark.parametrize("readme", [r for r in READMES if r.startswith("reports/")])
def test_prose_outside_the_fragments_holds_no_measured_figure(readme):
    text = (ROOT / readme).read_text(encoding="utf-8")
    prose = readme_tables.BLOCK.sub("", text)
    prose = re.sub(r"```.*?```", "", prose, flags=re.S)  # commands
    prose = re.sub(r"`[^`]*`", "", prose)  # names, commits, paths
    found = [m.group(0) for m in MEASURED.finditer(prose) if m.group(0) not in NOT_MEASURED]
    assert found == [], f"{readme}: hand-typed figures outside the generated fragments: {found}"


def test_a_changed_figure_is_caught_and_rewritten():
    readme = "reports/h100/README.md"
    text = (ROOT / readme).read_text(encoding="utf-8")
    fragments = readme_tables.render(readme)
    assert "| `mla` | 6.32 | 13.4 |" in fragments["inference-table"]  # the probe's 13.445 ms, not "13.5"
    tampered = text.replace("| `mla` | 6.32 | 13.4 |", "| `mla` | 6.32 | 13.5 |")
    assert tampered != text
    fixed, problems = readme_tables.rewrite(tampered, fragments)
    assert problems == [] and fixed == text


def test_h100_corrections_follow_from_the_documents():
    f = readme_tables.render("reports/h100/README.md")
    # the repeated gqa runs the committed files hold: the table's row and two controls
    assert "ended at 3.4894, 3.4973, 3.4937" in f["repeated-gqa"] and "3.4923" not in f["repeated-gqa"]
    # linear overtakes fused kernels at 16k; MLA sits between the fused kernels and the eager baseline
    assert "`flash2` from 16k" in f["crossovers"].split("\n")[2]
    assert "MLA uses more energy per token than `sdpa`, `flash2` and `flex` and less than `baseline`" in f["findings"]


def test_missing_or_unknown_markers_are_reported():
    text = "intro\n" + readme_tables.BEGIN.format(name="nope") + "\nx\n" + readme_tables.END.format(name="nope") + "\n"
    _, problems = readme_tables.rewrite(text, {"wanted": "y\n"})
    assert problems == ["no markers for fragment 'wanted'", "markers for unknown fragment 'nope'"]


def test_every_committed_report_readme_is_rendered():
    """A README added under reports/ without renderers would carry hand-typed figures unchecked
    (reports/h200/partial-e1a7e10 did): every one must be listed in readme_sources.READMES."""
    found = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "reports").rglob("README.md"))
    assert [r for r in found if r not in READMES] == []
