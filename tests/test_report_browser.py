"""The report in a real headless Chromium: loads offline without console errors, every
variant is in the table, plots are drawn, sorting works; a screenshot is kept under
``test-artifacts/``.

Needs the ``chromium`` binary (Debian: ``apt-get install -y chromium``); without it the test
is skipped with a loud reason.  Talks to Chromium over ``--remote-debugging-pipe`` with a
stdlib-only DevTools client (tests/browser/chromium_cdp.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "browser"))
from chromium_cdp import Chromium, find_chromium  # noqa: E402
from report_fixture import VARIANTS, write_fixture  # noqa: E402

from attnbench.report import build_report  # noqa: E402

pytestmark = pytest.mark.browser
ARTIFACTS = HERE.parent / "test-artifacts"

JS_TABLE = """(() => {
  const rows = [...document.querySelectorAll('#summary tbody tr')];
  return rows.map(r => r.getAttribute('data-variant'));
})()"""


@pytest.fixture(scope="module")
def chromium():
    binary = find_chromium()
    if binary is None:
        pytest.skip("BROWSER TEST NOT RUN: no chromium binary on PATH -- install it with "
                    "`apt-get install -y chromium` (the report's offline/console checks did not run)")
    return binary


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu-fixture", "cpu-fixture"])
def test_report_in_headless_chromium(chromium, tmp_path, gpu):
    kw = write_fixture(tmp_path / "results", gpu=gpu)
    out = tmp_path / "report"
    build_report(out_dir=out, **kw)
    with Chromium(chromium) as browser:
        browser.open((out / "index.html").as_uri(), width=1400)
        # loaded offline with no console error, no exception, no blocked/failed resource
        assert browser.problems() == [], browser.problems()
        assert not [e for e in browser.events if e.get("method") == "Page.javascriptDialogOpening"]
        assert browser.evaluate("document.title").startswith("attnbench report")
        assert browser.evaluate(JS_TABLE) == VARIANTS
        n_svg = browser.evaluate("document.querySelectorAll('figure svg').length")
        assert n_svg >= (12 if gpu else 8), n_svg
        # drawn, not empty: every plot has lines or dots
        assert browser.evaluate("[...document.querySelectorAll('figure svg')]"
                                ".every(s => s.querySelector('path, circle, rect[fill]'))")
        assert browser.evaluate("document.querySelectorAll('.not-measured').length") >= (1 if gpu else 4)
        # the escaped parameter is text, not markup
        assert "<script>alert(1)</script>" in browser.evaluate(
            "document.querySelector('tr[data-variant=gqa] .params').textContent")
        # sorting by training throughput: best (highest) first, then toggled; nulls (failed) always last
        btn = "document.querySelector('#summary thead th:nth-child(4) button')"
        assert browser.evaluate(f"{btn}.textContent") == "Train tokens/s"
        browser.evaluate(f"{btn}.click()")
        assert browser.evaluate(JS_TABLE) == ["linear", "gqa", "baseline", "lsh"]
        assert browser.evaluate(f"{btn}.parentNode.getAttribute('aria-sort')") == "descending"
        browser.evaluate(f"{btn}.click()")
        assert browser.evaluate(JS_TABLE) == ["baseline", "gqa", "linear", "lsh"]
        # step time: lower is better, so the first click sorts ascending
        step = "document.querySelector('#summary thead th:nth-child(5) button')"
        browser.evaluate(f"{step}.click()")
        assert browser.evaluate(JS_TABLE) == ["linear", "gqa", "baseline", "lsh"]
        browser.evaluate("document.querySelector('#summary thead th:nth-child(1) button').click()")
        assert browser.evaluate(JS_TABLE) == VARIANTS
        assert browser.problems() == []
        shot = browser.screenshot(ARTIFACTS / f"report-{'gpu' if gpu else 'cpu'}-fixture.png", width=1400)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_console_errors_are_detected(chromium, tmp_path):
    """The check above can fail: a page with a script error and a CSP-blocked script is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'none'\">"
                    "<title>t</title><p>x</p><script>undefinedFunction()</script>")
    with Chromium(chromium) as browser:
        browser.open(page.as_uri())
        problems = browser.problems()
    assert problems and any("Content Security Policy" in p or "script" in p.lower() for p in problems), problems
    page2 = tmp_path / "bad2.html"
    page2.write_text("<!DOCTYPE html><title>t</title><script>undefinedFunction()</script>")
    with Chromium(chromium) as browser:
        browser.open(page2.as_uri())
        problems = browser.problems()
    assert any("undefinedFunction" in p for p in problems), problems
