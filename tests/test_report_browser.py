"""The report in a real headless Chromium: loads offline without console errors, every
variant is in the table, plots are drawn, sorting works; the verdict is at the top, no raw
object repr reaches the page, the table's last column is reachable at 400 px, and the printed
table fits a landscape page; screenshots are kept under ``test-artifacts/``.

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


@pytest.fixture(scope="module")
def gpu_page(tmp_path_factory):
    kw = write_fixture(tmp_path_factory.mktemp("results"), gpu=True)
    out = tmp_path_factory.mktemp("report")
    build_report(out_dir=out, **kw)
    return (out / "index.html").as_uri()


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


JS_REACH_LAST_COLUMN = """(() => {
  const wrap = document.getElementById('summary-wrap');
  const heads = document.querySelectorAll('#summary thead th');
  const last = heads[heads.length - 1], first = heads[0];
  const before = {scrollWidth: wrap.scrollWidth, clientWidth: wrap.clientWidth,
                  overflowX: getComputedStyle(wrap).overflowX};
  last.scrollIntoView({block: 'center', inline: 'end'});
  const r = last.getBoundingClientRect(), f = first.getBoundingClientRect();
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  const hitFirst = document.elementFromPoint(f.left + 5, f.top + f.height / 2);
  return {...before, scrollLeft: wrap.scrollLeft, left: r.left, right: r.right, width: window.innerWidth,
          lastVisible: !!hit && last.contains(hit), firstPinned: !!hitFirst && first.contains(hitFirst),
          lastText: last.textContent.trim(), pageWidth: document.documentElement.scrollWidth};
})()"""


def test_verdict_first_no_object_reprs_and_last_column_reachable_at_400px(chromium, gpu_page):
    with Chromium(chromium) as browser:
        browser.open(gpu_page, width=400, height=800)
        assert browser.problems() == [], browser.problems()
        # the verdict box is the first section, in view without scrolling, and says what to use
        verdict = browser.evaluate("""(() => { const v = document.getElementById('verdict');
            const r = v.getBoundingClientRect();
            return {top: r.top, tag: v.previousElementSibling.tagName, text: v.innerText,
                    rows: v.querySelectorAll('#verdict-constraint tbody tr').length}; })()""")
        assert verdict["tag"] == "HEADER" and verdict["top"] < 800, verdict
        assert "Which variant should I use?" in verdict["text"] and "By sequence length" in verdict["text"]
        assert "one seed: order not established" in verdict["text"] and verdict["rows"] >= 6
        # no raw Python object repr anywhere in the page, text or markup (the fixture has one)
        assert "object at 0x" not in browser.evaluate("document.documentElement.outerHTML")
        assert "TransformGetItemToIndex" in browser.evaluate("document.documentElement.outerHTML")
        # the page itself does not scroll sideways; the table scrolls inside its box
        reach = browser.evaluate(JS_REACH_LAST_COLUMN)
        assert reach["pageWidth"] <= 400, reach
        assert reach["overflowX"] in ("auto", "scroll") and reach["scrollWidth"] > reach["clientWidth"], reach
        assert reach["scrollLeft"] > 0 and reach["lastText"].startswith("Cache at 32k tokens"), reach
        assert 0 <= reach["left"] and reach["right"] <= reach["width"] and reach["lastVisible"], reach
        assert reach["firstPinned"], reach  # the variant column stays in view while scrolled
        # plot text stays readable: tick labels at least 8 px tall on a 400 px screen
        smallest = browser.evaluate("Math.min(...[...document.querySelectorAll('#plot-sweep-time svg text')]"
                                    ".map(t => t.getBoundingClientRect().height))")
        assert smallest >= 8, smallest
        browser.screenshot(ARTIFACTS / "report-gpu-fixture-400.png", width=400)


def test_printed_table_fits_a_landscape_page(chromium, gpu_page, tmp_path):
    with Chromium(chromium) as browser:
        browser.open(gpu_page, width=1400)
        # A4 landscape minus the 8 mm margins of the page's @page rule: 281 mm = 1062 CSS px
        browser.emulate(width=1062, media="print")
        fit = browser.evaluate("""(() => { const t = document.getElementById('summary');
            return {table: t.getBoundingClientRect().width, page: document.body.clientWidth,
                    figures: [...document.querySelectorAll('figure')].map(f => getComputedStyle(f).breakInside)}; })()""")
        assert fit["table"] <= fit["page"] + 1, fit
        assert set(fit["figures"]) == {"avoid"}, fit
        pdf = browser.pdf(tmp_path / "report.pdf")
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 20_000


COMMITTED = sorted((HERE.parent / "reports" / "h200").glob("campaign-*/results/report/*/index.html"))


@pytest.mark.parametrize("page", COMMITTED, ids=[str(p.parent.relative_to(HERE.parent)) for p in COMMITTED])
def test_committed_campaign_report_answers_at_the_top_at_400px_and_prints(chromium, page):
    """The campaign's own reports, as committed (not the fixture): verdict box first with a
    recommendation per constraint and by length, no object repr, no console problem, the table's
    last column reachable at 400 px with the variant column pinned, the table fitting a printed
    landscape page."""
    with Chromium(chromium) as browser:
        browser.open(page.as_uri(), width=400, height=800)
        assert browser.problems() == [], browser.problems()
        verdict = browser.evaluate("""(() => { const v = document.getElementById('verdict');
            return {top: v.getBoundingClientRect().top, tag: v.previousElementSibling.tagName, text: v.innerText,
                    rows: v.querySelectorAll('#verdict-constraint tbody tr').length}; })()""")
        assert verdict["tag"] == "HEADER" and verdict["top"] < 800, verdict
        assert "Which variant should I use?" in verdict["text"] and "By sequence length" in verdict["text"]
        assert "Exact-agreement check" in verdict["text"] and verdict["rows"] >= 6, verdict
        assert "object at 0x" not in browser.evaluate("document.documentElement.outerHTML")
        reach = browser.evaluate(JS_REACH_LAST_COLUMN)
        assert reach["pageWidth"] <= 400 and reach["lastVisible"] and reach["firstPinned"], reach
        browser.open(page.as_uri(), width=1400)
        browser.emulate(width=1062, media="print")
        fit = browser.evaluate("""(() => ({table: document.getElementById('summary').getBoundingClientRect().width,
                                          page: document.body.clientWidth}))()""")
        assert fit["table"] <= fit["page"] + 1, fit


JS_SCALING = """(() => {
  const wraps = [...document.querySelectorAll('.table-wrap')];
  const reach = wraps.map(w => { const th = w.querySelectorAll('thead th'); const last = th[th.length - 1];
    last.scrollIntoView({block: 'center', inline: 'end'});
    const r = last.getBoundingClientRect();
    const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    return !!hit && last.contains(hit); });
  return {reach, pageWidth: document.documentElement.scrollWidth,
          svgs: document.querySelectorAll('figure svg').length, figures: document.querySelectorAll('figure').length,
          cis: document.querySelectorAll('td .ci').length, html: document.documentElement.outerHTML};
})()"""


def _scaling_fixture(tmp_path: Path) -> Path:
    """A scaling page over the campaign's three shapes (two model sizes at 512 tokens, two lengths at
    124M; nine variants), as the scaling rule renders it."""
    import csv
    import json

    from attnbench.report.scaling import build_scaling

    shapes = {"124M-T512": (512, {"n_layer": 12, "n_head": 12, "n_embd": 768}, 124e6),
              "124M-T2048": (2048, {"n_layer": 12, "n_head": 12, "n_embd": 768}, 124e6),
              "350M-T512": (512, {"n_layer": 24, "n_head": 16, "n_embd": 1024}, 354e6)}
    summaries, results = [], []
    for k, (name, (T, model, params)) in enumerate(shapes.items()):
        d = tmp_path / name
        d.mkdir()
        rows = [{"variant": v, "n": 3, "params_total": params, "tokens_per_s": 400e3 - 1e4 * i - 1e5 * k,
                 "tokens_per_s_ci95_low": 398e3 - 1e4 * i - 1e5 * k, "tokens_per_s_ci95_high": 402e3 - 1e4 * i - 1e5 * k,
                 "gpu_j_per_token": 0.0015 + 1e-4 * i, "gpu_j_per_token_above_idle": 0.0012 + 1e-4 * i,
                 "peak_allocated_bytes": (4 + i) * 2**30 * (1 + 2 * k), "val_loss": 5.1 + 0.01 * i, "val_loss_ci95_low": 5.05 + 0.01 * i,
                 "val_loss_ci95_high": 5.15 + 0.01 * i} for i, v in enumerate(VARIANTS)]
        with open(d / "summary.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        (d / "results.json").write_text(json.dumps({"config": {"model": {**model, "vocab_size": 50304},
                                                               "train": {"seq_len": T}}}))
        summaries.append(d / "summary.csv")
        results.append(d / "results.json")
    build_scaling(list(shapes), summaries, results, tmp_path / "report")
    return tmp_path / "report" / "index.html"


SCALING = sorted((HERE.parent / "reports" / "h200").glob("campaign-*/results/report/index.html"))


@pytest.mark.parametrize("page", [None, *SCALING], ids=["fixture", *(str(p.parent.relative_to(HERE.parent)) for p in SCALING)])
def test_scaling_page_at_400px_and_printed(chromium, page, tmp_path):
    """The scaling page (the fixture's, and each campaign's once committed): no console problem and no
    object repr; at 400 px nothing wider than the screen, every table's last column reachable, each
    mean's interval in its cell; every figure a plot; printed, every table within the page."""
    page = page or _scaling_fixture(tmp_path)
    with Chromium(chromium) as browser:
        browser.open(page.as_uri(), width=400, height=800)
        assert browser.problems() == [], browser.problems()
        s = browser.evaluate(JS_SCALING)
        assert "object at 0x" not in s["html"]
        assert s["pageWidth"] <= 400 and s["reach"] and all(s["reach"]), {k: s[k] for k in ("pageWidth", "reach")}
        assert s["cis"] > 0 and s["figures"] > 0 and s["svgs"] == s["figures"], {k: s[k] for k in ("cis", "svgs", "figures")}
        browser.open(page.as_uri(), width=1400)
        browser.emulate(width=1062, media="print")
        fit = browser.evaluate("""(() => ({tables: [...document.querySelectorAll('table')].map(
            t => t.getBoundingClientRect().width), page: document.body.clientWidth}))()""")
        assert max(fit["tables"]) <= fit["page"] + 1, fit
