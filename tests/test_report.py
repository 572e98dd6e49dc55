"""The HTML report from small result documents in the documented schemas (CPU, fast)."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "browser"))
from report_fixture import NO_CUDA, NO_NVML, VARIANTS, XSS, write_fixture  # noqa: E402

BASELINE_WORD = "× baseline"

from attnbench.report import build_report, pareto_front  # noqa: E402


class Page(HTMLParser):
    """Collects the summary table cells, figures and script tags of the report."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows: dict[str, dict[str, dict]] = {}
        self.row_order: list[str] = []
        self.row_classes: dict[str, str] = {}
        self.failures: list[list[str]] = []  # cells of each row of the failures table
        self.figures: dict[str, dict] = {}  # id -> {"svg": bool, "missing": text of the placeholder | None}
        self.scripts = 0
        self._row = self._cell = self._fig = None
        self._text: list[str] = []
        self._fig_text: list[str] = []
        self._fig_depth = 0
        self._failure_row = None
        self._failure_cells: list[str] = []
        self._missing: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "tr" and "data-variant" in a:
            self._row = a["data-variant"]
            self.row_order.append(self._row)
            self.rows[self._row] = {}
            self.row_classes[self._row] = a.get("class") or ""
        if tag == "tr" and "data-failure" in a:
            self._failure_row, self._failure_cells = a["data-failure"], []
        if tag == "td" and self._failure_row:
            self._text = []
        if tag == "td" and self._row and "data-col" in a:
            self._cell = {"key": a["data-col"], "class": a.get("class", ""), "title": a.get("title"),
                          "sort": a.get("data-sort")}
            self._text = []
        if tag == "figure":
            self._fig = a.get("id")
            self.figures[self._fig] = {"svg": False, "missing": None}
        if self._fig and tag == "svg":
            self.figures[self._fig]["svg"] = True
        if self._fig and tag == "div" and "not-measured" in (a.get("class") or ""):
            self._missing = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._cell["text"] = "".join(self._text).strip()
            self.rows[self._row][self._cell["key"]] = self._cell
            self._cell = None
        if tag == "td" and self._failure_row:
            self._failure_cells.append(" ".join("".join(self._text).split()))
        if tag == "tr":
            if self._failure_row:
                self.failures.append(self._failure_cells)
            self._row = self._failure_row = None
        if tag == "div" and self._missing is not None:
            self.figures[self._fig]["missing"] = " ".join("".join(self._missing).split())
            self._missing = None
        if tag == "figure":
            self._fig = None

    def handle_data(self, data):
        if self._cell is not None or self._failure_row:
            self._text.append(data)
        if self._missing is not None:
            self._missing.append(data)


def build(tmp_path: Path, gpu: bool = True, **overrides):
    kw = write_fixture(tmp_path / "results", gpu=gpu)
    kw.update(overrides)
    out = tmp_path / "report"
    doc = build_report(out_dir=out, **kw)
    html = (out / "index.html").read_text(encoding="utf-8")
    page = Page()
    page.feed(html)
    return doc, html, page, out


@pytest.fixture(scope="module")
def gpu_report(tmp_path_factory):
    return build(tmp_path_factory.mktemp("gpu"), gpu=True)


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory):
    return build(tmp_path_factory.mktemp("cpu"), gpu=False)


def test_every_variant_has_a_row_in_config_order(gpu_report):
    doc, html, page, out = gpu_report
    assert page.row_order == VARIANTS
    for name in VARIANTS:
        assert set(page.rows[name]) >= {"kernel", "params_total", "tokens_per_s", "step_ms_p50", "mfu",
                                        "peak_allocated_bytes", "gpu_j_per_token", "energy_total_kwh", "co2eq_kg",
                                        "final_train_loss", "val_loss", "prefill_ms_p50",
                                        "decode_ms_per_token_p50", "cache_512", "cache_4096", "cache_32768"}
    assert page.rows["baseline"]["kernel"]["text"] == "sdpa_flash"
    assert page.rows["linear"]["kernel"]["text"] == "linear_chunked"


def test_failed_variant_is_listed_with_its_reason_not_dropped(gpu_report):
    doc, html, page, out = gpu_report
    assert "failed" in page.row_classes["lsh"]
    assert page.failures[0][:5] == ["lsh", "train", "failed", "oom", "12"]
    assert page.failures[0][5].startswith("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert page.failures[1][:4] == ["lsh", "probe", "skipped", "skipped"]
    assert "training failed" in page.failures[1][5]
    # its cells say why they are empty
    cell = page.rows["lsh"]["tokens_per_s"]
    assert cell["text"] == "—" and "oom at step 12" in cell["title"]
    assert any("lsh (oom at step 12)" in f for f in doc["findings"])
    assert [f["variant"] for f in doc["failures"]] == ["lsh", "lsh"]


def test_html_from_documents_is_escaped(gpu_report):
    doc, html, page, out = gpu_report
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert page.scripts == 1  # only the page's own sorting script
    # the data itself is kept verbatim in the downloads
    data = json.loads((out / "results.json").read_text())
    assert data["variants"][1]["train"]["attention"]["params"]["note"] == XSS
    assert XSS in (out / "results.csv").read_text()


def test_escaping_inside_svg_plots(tmp_path):
    kw = write_fixture(tmp_path / "results", gpu=True)
    # a variant whose name carries markup (the pipeline forbids it; the report must still cope)
    p = kw["train"][1]
    d = json.loads(p.read_text())
    d["variant"] = 'g<b onload="x()">qa'
    p.write_text(json.dumps(d))
    build_report(out_dir=tmp_path / "r", **kw)
    html = (tmp_path / "r" / "index.html").read_text()
    assert '<b onload="x()">' not in html
    assert "g&lt;b onload=&#34;x()&#34;&gt;qa" in html or "g&lt;b onload=&quot;x()&quot;&gt;qa" in html


def test_null_metrics_are_rendered_as_unavailable_never_zero(gpu_report):
    doc, html, page, out = gpu_report
    cell = page.rows["linear"]["gpu_j_per_token"]
    assert cell["text"] == "—"
    assert "na" in cell["class"].split()
    assert cell["title"] == f"not measured: {NO_NVML}"
    assert cell["sort"] == ""  # sorts last, never as 0
    mfu = page.rows["linear"]["mfu"]
    assert mfu["text"] == "—" and "no peak TFLOP/s" in mfu["title"]
    # CSV: empty cell; JSON: null
    rows = {r["variant"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert rows["linear"]["gpu_j_per_token"] == ""
    assert rows["lsh"]["tokens_per_s"] == "" and rows["lsh"]["val_loss"] == ""
    summary = {r["variant"]: r for r in json.loads((out / "results.json").read_text())["summary"]}
    assert summary["linear"]["gpu_j_per_token"] is None
    assert float(rows["baseline"]["gpu_j_per_token"]) > 0
    # every unavailable metric has a note with its reason
    notes = {(n["document"], n["metric"]): n for n in doc["unavailable"]}
    assert notes[("train", "energy.gpu_j_per_token")]["reason"] == NO_NVML
    assert notes[("train", "energy.gpu_j_per_token")]["variants"] == ["linear"]
    assert NO_NVML in html


def test_one_seed_claims_no_best_but_keeps_baseline_ratios(gpu_report):
    """One run per variant has no interval: no cell is shaded best, whatever its lead."""
    doc, html, page, out = gpu_report
    assert not any("best" in c["class"].split() for row in page.rows.values() for c in row.values())
    assert "×1.25" in page.rows["gqa"]["tokens_per_s"]["text"]
    assert "+0.0200" in page.rows["gqa"]["val_loss"]["text"]
    assert "1 run: no interval" in page.rows["gqa"]["tokens_per_s"]["title"]


def with_seeds(kw, seeds=(1, 2, 3), noise=None):
    """Three seeds of every fixture train document: ``noise`` maps a dotted key to the relative
    (or, for losses, absolute) spread of its values across seeds."""
    noise = noise or {}
    paths = []
    for seed in seeds:
        for p in kw["train"]:
            d = json.loads(p.read_text())
            d["provenance"]["seed"] = seed
            for key, spread in noise.items():
                sec, field_ = key.split(".")
                if d.get(sec) and isinstance(d[sec].get(field_), (int, float)):
                    delta = spread * (seed - 2)
                    d[sec][field_] = d[sec][field_] + delta if "loss" in field_ else d[sec][field_] * (1 + delta)
            q = p.parent / f"seed{seed}" / p.name
            q.parent.mkdir(exist_ok=True)
            q.write_text(json.dumps(d))
            for side in ("steps.csv", "power_train.csv"):
                if (p.parent / side).exists():
                    (q.parent / side).write_bytes((p.parent / side).read_bytes())
            paths.append(q)
    return {**kw, "train": paths}


def test_three_seeds_best_only_where_intervals_separate(tmp_path):
    kw = with_seeds(write_fixture(tmp_path / "seeds", gpu=True),
                    noise={"timing.tokens_per_s": 0.01, "training.val_loss": 0.03})
    doc, html, page, out = build(tmp_path, gpu=True, **kw)
    assert page.row_order == VARIANTS
    cell = page.rows["linear"]["tokens_per_s"]
    assert "best" in cell["class"].split() and "mean of 3 seeds; 95 % interval" in cell["title"]
    # baseline 4.95 and gqa 4.97, each +-0.03 over seeds: their intervals overlap; but the seed moves
    # both alike (same data order and init), so per seed gqa is 0.02 above baseline every time: paired,
    # baseline is ahead
    assert "best" in page.rows["baseline"]["val_loss"]["class"].split()
    assert "ahead of every other row per seed" in page.rows["baseline"]["val_loss"]["title"]
    assert all("best" not in c["class"].split() for c in page.rows["lsh"].values())  # failed: never best


def test_paired_differences_that_change_sign_over_seeds_are_a_tie(tmp_path):
    """The same spread, but the seeds move baseline and gqa in opposite directions: the paired
    differences (+0.08, +0.02, -0.04) include 0 and the intervals overlap, so no best and the
    verdict says tie."""
    kw = with_seeds(write_fixture(tmp_path / "seeds", gpu=True), noise={"training.val_loss": 0.03})
    for p in kw["train"]:
        d = json.loads(p.read_text())
        if d["variant"] == "gqa":
            d["training"]["val_loss"] -= 2 * 0.03 * (d["provenance"]["seed"] - 2)  # the other way round
            p.write_text(json.dumps(d))
    doc, html, page, out = build(tmp_path, gpu=True, **kw)
    assert not any("best" in page.rows[v]["val_loss"]["class"].split() for v in VARIANTS)
    quality = {c["what"]: c for c in doc["verdict"]["constraints"]}["Quality: validation loss"]
    assert quality["status"] == "tie", quality
    assert {x["name"] for x in quality["best"]} >= {"baseline", "gqa"}


def test_paired_difference_is_a_t_interval_over_shared_seeds():
    from attnbench.stats import bootstrap_mean, order, paired_difference, paired_ratio, t975

    d = paired_difference({1: 5.0, 2: 5.1, 3: 5.2}, {1: 4.9, 2: 5.02, 3: 5.08})
    assert d.n == 3 and abs(d.mean - 0.1) < 1e-12
    half = 4.303 * 0.02 / 3 ** 0.5   # sd of (0.10, 0.08, 0.12) = 0.02, t(2) = 4.303
    assert abs(d.low - (0.1 - half)) < 1e-9 and abs(d.high - (0.1 + half)) < 1e-9
    assert not paired_difference({1: 1.0, 2: 2.0}, {2: 1.0, 3: 5.0}).has_interval  # one shared seed
    assert abs(t975(31) - 2.040) < 0.005 and t975(30) == 2.042
    # ratios on the log scale: a large gap one noisy seed scales stays separated (LSH eager decode, H200)
    fast, slow = {1: 0.75, 2: 0.75, 3: 0.76}, {1: 38.2, 2: 17.3, 3: 15.4}
    r = paired_ratio(slow, fast)
    assert r.low > 1 and abs(r.mean - (38.2 / 0.75 * 17.3 / 0.75 * 15.4 / 0.76) ** (1 / 3)) < 1e-9
    assert paired_difference(slow, fast).low < 0 < paired_difference(slow, fast).high  # the difference cannot
    ests = {"fast": bootstrap_mean(fast.values()), "slow": bootstrap_mean(slow.values())}
    assert order(ests, "min", {"fast": fast, "slow": slow}, "ratio") == (["fast"], ["slow"])
    assert not paired_ratio({1: 0.0, 2: 1.0}, {1: 1.0, 2: 1.0}).has_interval  # not positive: no ratio


def test_a_pair_that_favours_the_runner_up_on_their_shared_seeds_is_a_tie():
    """A leads on its mean (its third seed is high); on the two seeds both finished B is ahead.
    Paired, B is not worse than A, so no order (review of ef2e010: it was 'clear')."""
    from attnbench.stats import bootstrap_mean, order

    a, b = {1: 10.0, 2: 10.0, 3: 20.0}, {1: 11.0, 2: 11.1}
    ests = {"A": bootstrap_mean(a.values()), "B": bootstrap_mean(b.values())}
    assert order(ests, "max", {"A": a, "B": b}, "ratio") == (["A", "B"], [])


def test_csv_and_json_are_written(gpu_report):
    doc, html, page, out = gpu_report
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["variant"] for r in rows] == VARIANTS
    assert rows[3]["status"] == "failed" and rows[3]["failure_kind"] == "oom" and rows[3]["failure_step"] == "12"
    assert abs(float(rows[0]["tokens_per_s"]) - 20480) < 1e-6
    data = json.loads((out / "results.json").read_text())
    assert data["schema"] == "attnbench.report/1"
    assert [v["variant"] for v in data["variants"]] == VARIANTS
    h = data["header"]
    assert h["run_name"] == "fixture" and h["device"] == "NVIDIA H100 80GB HBM3"
    assert h["git_commit"].startswith("0123456 ") and h["train_tokens"] == 41234 and "550.54.15" in h["driver"]
    assert doc["files"]["html"].endswith("index.html")
    assert not list(out.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_header_shows_provenance_and_dataset(gpu_report):
    doc, html, page, out = gpu_report
    for text in ("NVIDIA H100 80GB HBM3", "550.54.15", "2.5.1+cu124", "12.4", "0123456789abcdef", "chitchat",
                 "41,234", "2,101", doc["header"]["config_hash"]):
        assert text in html, text
    assert 'href="results.csv"' in html and 'href="results.json"' in html


def test_page_is_self_contained(gpu_report):
    doc, html, page, out = gpu_report
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html, re.I)
    assert "<link rel=\"stylesheet\"" not in html and "@import" not in html
    # the CSP allows exactly the page's script, by hash
    csp = re.search(r"script-src 'sha256-([^']+)'", html).group(1)
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    assert base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() == csp
    assert html.count("<svg") >= 8


def test_plots_present_and_missing_data_says_not_measured(gpu_report):
    doc, html, page, out = gpu_report
    for fid in ("plot-loss-step", "plot-loss-delta", "plot-loss-energy", "plot-energy-loss", "plot-prefill", "plot-decode",
                "plot-sweep-time", "plot-sweep-mem", "plot-sweep-energy", "plot-mem-peak_allocated_bytes"):
        assert page.figures[fid] == {"svg": True, "missing": None}, fid
    power = {fid: f for fid, f in page.figures.items() if fid.startswith("plot-power-")}
    assert len(power) == 4
    assert power["plot-power-2"] == {"svg": False, "missing": f"not measured: {NO_NVML}"}  # linear: no samples
    assert power["plot-power-0"]["svg"]


def test_cpu_run_says_energy_was_not_measured(cpu_report):
    doc, html, page, out = cpu_report
    for fid in ("plot-loss-energy", "plot-energy-loss", "plot-sweep-mem", "plot-mem-peak_allocated_bytes"):
        assert not page.figures[fid]["svg"] and page.figures[fid]["missing"].startswith("not measured: "), fid
    assert page.figures["plot-energy-loss"]["missing"].startswith(f"not measured: {NO_NVML}")
    assert page.figures["plot-sweep-mem"]["missing"].startswith(f"not measured: {NO_CUDA}")
    assert page.figures["plot-sweep-energy"]["missing"] == "not measured: no GPU: CPU run"
    assert page.figures["plot-loss-step"]["svg"] and page.figures["plot-sweep-time"]["svg"]
    # no power samples from any variant: one placeholder, not one per variant
    power = {fid: f for fid, f in page.figures.items() if fid.startswith("plot-power-")}
    assert list(power) == ["plot-power-all"]
    assert not power["plot-power-all"]["svg"] and power["plot-power-all"]["missing"].startswith("not measured: ")
    text = " ".join(doc["findings"])
    assert "GPU energy was not measured" in text and NO_NVML in text
    assert "Least GPU energy" not in text and "Pareto" not in text and "per unit of GPU energy" not in text
    assert "CPU run" in text
    # no variant has GPU memory: the column leaves the table and is named under it with its reason
    assert all("peak_allocated_bytes" not in page.rows[name] for name in VARIANTS)
    note = re.search(r'<p class="legend-note" id="empty-columns">(.*?)</p>', html, re.S).group(1)
    assert "Peak GPU mem" in note and NO_CUDA in note
    for name in ("baseline", "gqa", "linear"):
        assert page.rows[name]["peak_rss_bytes"]["text"] != "—"  # host RSS shown on CPU runs


def test_pareto_front():
    pts = [("a", 1.0, 5.0), ("b", 2.0, 4.0), ("c", 3.0, 4.5), ("d", 0.5, 6.0), ("e", 2.0, 4.0)]
    assert [n for n, _, _ in pareto_front(pts)] == ["d", "a", "b", "e"]


def test_missing_and_unreadable_documents(tmp_path):
    kw = write_fixture(tmp_path / "results", gpu=True)
    kw["probe"] = kw["probe"][:2]  # no probe for linear, lsh
    kw["sweep"][0].write_text("{not json")
    kw["train"].append(tmp_path / "results" / "train" / "ghost" / "metrics.json")  # never written
    out = tmp_path / "report"
    doc = build_report(out_dir=out, **kw)
    page = Page()
    page.feed((out / "index.html").read_text())
    assert page.row_order == VARIANTS + ["ghost"]
    assert "missing" in page.rows["ghost"]["tokens_per_s"]["title"]
    assert "no probe result document" in page.rows["linear"]["prefill_ms_p50"]["title"]
    assert any(f["variant"] == "baseline" and f["stage"] == "sweep" for f in doc["failures"])
    assert any(f["variant"] == "ghost" and f["stage"] == "train" for f in doc["failures"])


def test_no_baseline_means_no_ratios(tmp_path):
    kw = write_fixture(tmp_path / "results", gpu=True)
    kw["train"], kw["probe"], kw["sweep"] = kw["train"][1:], kw["probe"][1:], kw["sweep"][1:]
    out = tmp_path / "report"
    doc = build_report(out_dir=out, **kw)
    page = Page()
    page.feed((out / "index.html").read_text())
    assert "×" not in page.rows["gqa"]["tokens_per_s"]["text"]
    assert not any(BASELINE_WORD in f for f in doc["findings"][1:])
    assert "no ratios" in (out / "index.html").read_text()


def test_all_variants_failed(tmp_path):
    kw = write_fixture(tmp_path / "results", gpu=True)
    for p in kw["train"]:
        d = json.loads(p.read_text())
        d.update(status="failed", failure={"kind": "nan", "message": "non-finite loss nan at step 3", "step": 3})
        for k in ("training", "timing", "energy", "memory", "flops", "emissions", "kernel"):
            d.pop(k, None)
        p.write_text(json.dumps(d))
        (p.parent / "steps.csv").unlink(missing_ok=True)
    out = tmp_path / "report"
    doc = build_report(out_dir=out, **kw)
    assert any("No variant finished training" in f for f in doc["findings"])
    assert len([f for f in doc["failures"] if f["stage"] == "train"]) == 4
    html = (out / "index.html").read_text()
    assert "not measured: train failed: nan: non-finite loss nan at step 3" in html


def _exact(kw, index: int, *, shift: float, points=None) -> None:
    """Mark the fixture's variant ``index`` as computing baseline's function, its validation
    curve ``shift`` away from baseline's at the eval points indexed by ``points`` (all of them:
    the H200 default run's sdpa, off from the first eval on)."""
    base = json.loads(kw["train"][0].read_text())
    p = kw["train"][index]
    d = json.loads(p.read_text())
    d["attention"]["exact"] = True
    d["kernel"] = "sdpa:auto->cudnn"
    d["training"]["val_history"] = [dict(h) for h in base["training"]["val_history"]]
    for i in range(len(d["training"]["val_history"])) if points is None else points:
        d["training"]["val_history"][i]["val_loss"] += shift
    d["training"]["val_loss"] = d["training"]["val_history"][-1]["val_loss"]
    p.write_text(json.dumps(d))


def test_exact_variant_off_baseline_is_suspect_named_first_and_never_best(tmp_path):
    """An exact variant (same function, data, seed and init as baseline) whose loss curve leaves
    baseline's by more than report.exact_tolerance is marked suspect in the table, named first
    in the findings, and takes part in no ranking (the H200 default run's sdpa: +0.41 at the
    first eval)."""
    kw = write_fixture(tmp_path / "exact", gpu=True)
    _exact(kw, 2, shift=0.41)           # 'linear' stands in for sdpa: the fastest fixture row
    doc, html, page, out = build(tmp_path, gpu=True, train=kw["train"], probe=kw["probe"], sweep=kw["sweep"],
                                 stats=kw["stats"], config={**kw["config"], "report": {"exact_tolerance": 0.05}})
    assert "suspect" in page.row_classes["linear"]
    assert doc["findings"][0].startswith("linear computes baseline's function")
    assert "+0.410 at step 20" in doc["findings"][0] and "at steps 20 and 40" in doc["findings"][0]
    assert "best" not in page.rows["linear"]["tokens_per_s"]["class"].split()
    assert not any(f.startswith("Fastest training: linear") for f in doc["findings"])
    rows = {r["variant"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert rows["linear"]["exact_agreement"] == "suspect"
    assert float(rows["linear"]["exact_max_loss_diff"]) == pytest.approx(0.41)
    assert rows["baseline"]["exact_agreement"] == "" and rows["gqa"]["exact_agreement"] == ""


def test_exact_variant_within_tolerance_agrees(tmp_path):
    kw = write_fixture(tmp_path / "exact", gpu=True)
    _exact(kw, 1, shift=0.01)
    doc, html, page, out = build(tmp_path, gpu=True, train=kw["train"], probe=kw["probe"], sweep=kw["sweep"],
                                 stats=kw["stats"], config=kw["config"])
    assert "suspect" not in page.row_classes["gqa"]
    rows = {r["variant"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert rows["gqa"]["exact_agreement"] == "agrees"
    assert not any("computes baseline's function" in f for f in doc["findings"])


def test_exact_variant_off_at_one_early_point_only_agrees_and_is_named(tmp_path):
    """A lone excursion past the tolerance at an early eval point, back on baseline's curve at
    the next and at the end, is bf16 drift of two correct runs (the H200 campaign's flash2 at
    T = 2048: +0.059 at step 125, 0.000 at 250): the row agrees, the excursion is named.  The
    same gap at the last eval point makes the row suspect."""
    kw = write_fixture(tmp_path / "early", gpu=True)
    _exact(kw, 1, shift=0.06, points=[0])
    doc, html, page, out = build(tmp_path / "a", gpu=True, train=kw["train"], probe=kw["probe"], sweep=kw["sweep"],
                                 stats=kw["stats"], config=kw["config"])
    assert "suspect" not in page.row_classes["gqa"]
    rows = {r["variant"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert rows["gqa"]["exact_agreement"] == "agrees"
    assert float(rows["gqa"]["exact_max_loss_diff"]) == pytest.approx(0.06)
    said = doc["verdict"]["agreement"]
    assert any(s.startswith("Exact-agreement check: gqa follow") and "every eval point but the excursion below "
               "(largest gap 0.0000, gqa)" in s for s in said), said
    lone = [s for s in said if s.startswith("Past ±0.05 at a seed's first eval point only")]
    assert len(lone) == 1 and "gqa +0.060 at step 20 (seed" in lone[0], said

    kw = write_fixture(tmp_path / "late", gpu=True)
    _exact(kw, 1, shift=-0.06, points=[1])
    doc, html, page, out = build(tmp_path / "b", gpu=True, train=kw["train"], probe=kw["probe"], sweep=kw["sweep"],
                                 stats=kw["stats"], config=kw["config"])
    assert "suspect" in page.row_classes["gqa"]
    assert doc["findings"][0].startswith("gqa computes baseline's function")
    assert "at step 40" in doc["findings"][0] and "-0.060" in doc["findings"][0]


def _agreement(curves: dict[int, list[float]], steps=(125, 250, 375, 500, 550), tol=0.05) -> dict:
    """agreement.check on one exact variant whose curve is baseline's plus ``curves[seed]``."""
    from types import SimpleNamespace as NS

    from attnbench.report import agreement

    def run(seed, losses, at=steps):
        doc = NS(data={"attention": {"exact": True}, "kernel": "sdpa:flash",
                       "training": {"val_history": [{"step": s, "val_loss": x} for s, x in zip(at, losses)]}})
        return NS(seed=seed, train=doc)
    base_loss = [6.4, 6.0, 5.8, 5.7, 5.65]
    base = NS(name="baseline", ok=True, ok_runs=[run(s, base_loss) for s in curves])
    exact = NS(name="flash2", ok=True, agreement=None, train=NS(data={"attention": {"exact": True}}),
               ok_runs=[run(s, [b + d for b, d in zip(base_loss, ds)], steps[:len(ds)]) for s, ds in curves.items()])
    agreement.check([base, exact], tol)
    return exact.agreement


def test_exact_agreement_lets_pass_only_a_small_first_point_excursion_that_comes_back():
    """Only a seed's first eval point may be off (by at most twice the tolerance, back within it at
    the next): bf16 drift where the loss falls fastest.  Larger, later, twice in a row, at the
    last point or a seed's only point: suspect."""
    a = _agreement({1338: [0.059, 0.0, 0.0, -0.01, -0.01], 1337: [0.02, 0.0, 0.0, 0.0, 0.0]})
    assert not a["suspect"] and [(p["seed"], p["step"]) for p in a["excursions"]] == [(1338, 125)]
    assert a["max_kept_diff"] == pytest.approx(0.02) and a["max_abs_diff"] == pytest.approx(0.059)
    for curve, steps in (([0.9, 0, 0, 0, 0], [125]),          # far past twice the tolerance
                         ([0.06, 0.06, 0, 0, 0], [125, 250]),  # not back at the next point
                         ([0, 0, 0.06, 0, 0], [375]),          # later in training
                         ([0.06, 0, 0.06, 0, 0], [375]),       # a second excursion
                         ([0, 0, 0, 0, -0.06], [550]),         # at the end
                         ([0.06], [125])):                     # a seed's only point is its last
        a = _agreement({1337: curve})
        assert a["suspect"] and a["off_steps"] == steps, (curve, a)
    # one seed fine, another off later: suspect, named by the seed that left
    a = _agreement({1337: [0.06, 0, 0, 0, 0], 1339: [0, 0, 0, 0.07, 0.07]})
    assert a["suspect"] and a["at_seed"] == 1339 and a["off_steps"] == [500, 550]


def _agreements(offsets: dict[str, list[float]], base_drift: list[float], tol=0.05, variants=None) -> dict[str, dict]:
    """agreement.check on several exact variants at one seed: each curve is the exact function's
    plus ``offsets[name]`` (None: no eval at that step), baseline's plus ``base_drift``; the
    variants are appended to ``variants`` when given."""
    from types import SimpleNamespace as NS

    from attnbench.report import agreement

    steps, truth = (125, 250, 375, 500, 550), [6.4, 6.0, 5.8, 5.7, 5.65]

    def variant(name, ds):
        doc = NS(data={"attention": {"exact": True}, "kernel": f"{name}:k",
                       "training": {"val_history": [{"step": s, "val_loss": x + d}
                                                    for s, x, d in zip(steps, truth, ds) if d is not None]}})
        return NS(name=name, ok=True, agreement=None, train=doc, ok_runs=[NS(seed=1338, train=doc)])
    vs = [variant("baseline", base_drift)] + [variant(n, ds) for n, ds in offsets.items()]
    agreement.check(vs, tol)
    if variants is not None:
        variants += vs
    return {v.name: v.agreement for v in vs[1:]}


def test_exact_agreement_measures_against_the_seeds_exact_median_not_baseline_alone():
    """Baseline is one bf16 run and drifts like any other: at 350M, T = 512, seed 1338, step 250
    of the H200 campaign sdpa, flash2 and flex stood +0.039, +0.027 and +0.050 above baseline, all
    self-checks passing.  Against the median of the four runs none is off; the gap to baseline
    is kept beside it.  A wrong kernel among them still stands off the median; with baseline and
    one exact variant only, baseline's curve is the reference."""
    drift = {"sdpa": [0.0008, 0.0392, 0.0165, 0.0079, 0.0099], "flash2": [-0.0023, 0.0273, 0.0172, 0.0164, 0.0178],
             "flex": [0.0053, 0.0503, 0.0335, 0.0309, 0.0406]}
    got = _agreements(drift, [0.0] * 5)
    assert not any(a["suspect"] for a in got.values()), got
    assert got["flex"]["max_baseline_diff"] == pytest.approx(0.0503)
    assert got["flex"]["max_abs_diff"] == pytest.approx(0.0406 - (0.0099 + 0.0178) / 2)  # step 550
    assert {p["reference"] for p in got["flex"]["points"]} == {"median of 4 exact runs"}
    assert got["flex"]["points"][1]["baseline_off_median"] == pytest.approx(-(0.0273 + 0.0392) / 2)

    leaky = _agreements({**drift, "flash2": [-0.9, -1.1, -1.2, -1.2, -1.2]}, [0.0] * 5)
    assert leaky["flash2"]["suspect"] and leaky["flash2"]["off_steps"] == [125, 250, 375, 500, 550]
    assert not leaky["sdpa"]["suspect"] and not leaky["flex"]["suspect"], leaky

    alone = _agreements({"flex": drift["flex"]}, [0.0] * 5)
    assert alone["flex"]["suspect"] and alone["flex"]["off_steps"] == [250]
    assert {p["reference"] for p in alone["flex"]["points"]} == {"baseline: fewer than 3 exact runs"}
    # a baseline off by the tolerance's size from two agreeing fast kernels is within it of their
    # median (the middle run): the fast kernels agree, the gap to baseline is kept
    three = _agreements({"sdpa": [0.0] * 5, "flex": [0.0] * 5}, [0.04] * 5)
    assert not three["sdpa"]["suspect"] and three["sdpa"]["max_baseline_diff"] == pytest.approx(0.04)


def test_exact_agreement_a_fault_two_kernels_share_is_caught_against_baseline():
    """sdpa and flash2 share PyTorch's SDPA entry point, so one fault can move both: they then
    outvote baseline in the median.  Where the median leaves baseline (the independent eager
    path) by more than the tolerance, baseline's loss is the reference again: both are suspect,
    a third kernel that agrees with baseline is not, and the finding says why baseline's curve
    was used."""
    from types import SimpleNamespace as NS

    from attnbench.report import agreement

    shared = [-0.9, -1.1, -1.2, -1.2, -1.2]
    got = _agreements({"sdpa": shared, "flash2": shared}, [0.0] * 5)  # three runs: the median is the fault
    assert got["sdpa"]["suspect"] and got["flash2"]["suspect"], got
    assert got["sdpa"]["points"][0]["reference"] == "baseline: baseline stands +0.900 off the median of 3 exact runs"
    got = _agreements({"sdpa": [0.3] * 5, "flash2": [0.3] * 5, "flex": [0.01] * 5}, [0.0] * 5)
    assert got["sdpa"]["suspect"] and got["flash2"]["suspect"] and not got["flex"]["suspect"], got
    flash2 = NS(name="flash2", agreement=got["flash2"], train=NS(data={"kernel": "sdpa:flash"}),
                ok_runs=[NS(seed=1338, train=NS(data={"kernel": "sdpa:flash"}))])
    said = agreement.describe(flash2)
    assert "off baseline's (the reference here: baseline stands -0.155 off the median of 4 exact runs)" in said, said
    assert "+0.300 at step 125" in said and "(sdpa:flash)" in said


def test_exact_agreement_line_counts_the_points_where_baseline_is_the_reference():
    """The verdict's agreement line names where baseline's loss stood in for the median: eval
    points with fewer than three runs, and points where baseline stands off the median."""
    from attnbench.report.verdict import agreement_text

    vs = []
    _agreements({"sdpa": [0.01, 0.01, None, None, 0.0], "flex": [0.0, 0.0, None, 0.0, 0.0]}, [0.0] * 5, variants=vs)
    for v in vs:
        v.suspect, v.runs = bool(v.agreement and v.agreement.get("suspect")), []  # no stale runs
    said = [s for s in agreement_text(vs) if s.startswith("Exact-agreement check:")]
    # step 375: no exact variant has it; step 500: flex alone, two runs with baseline
    assert len(said) == 1 and said[0].endswith(
        "; at 1 of 4 eval points baseline's loss is the reference instead (1 with fewer than 3 runs)."), said

    vs = []
    shared = [-0.9, 0.0, 0.0, 0.0, 0.0]
    _agreements({"sdpa": shared, "flash2": shared, "flex": [0.0] * 5}, [0.0] * 5, variants=vs)
    for v in vs:
        v.suspect, v.runs = bool(v.agreement and v.agreement.get("suspect")), []
    assert [v.name for v in vs if v.suspect] == ["sdpa", "flash2"]
    said = [s for s in agreement_text(vs) if s.startswith("Exact-agreement check:")]
    assert len(said) == 1 and "baseline itself stands at most 0.4500 from it, and" in said[0], said
    assert said[0].endswith("; at 1 of 5 eval points baseline's loss is the reference instead (1 where baseline "
                            "stands more than ±0.05 off the median)."), said


def test_exact_agreement_text_names_the_median_and_the_gap_to_baseline(tmp_path):
    """With three exact runs at a seed the verdict's agreement line says what the reference is,
    how far baseline stands from it and the largest gap to baseline's curve alone; results.csv
    carries both gaps.  Where baseline's loss is the reference instead, the line counts those
    points and says why."""
    kw = write_fixture(tmp_path / "median", gpu=True)
    _exact(kw, 1, shift=0.04)
    _exact(kw, 2, shift=0.03)
    doc, html, page, out = build(tmp_path, gpu=True, train=kw["train"], probe=kw["probe"], sweep=kw["sweep"],
                                 stats=kw["stats"], config=kw["config"])
    said = [s for s in doc["verdict"]["agreement"] if s.startswith("Exact-agreement check:")]
    assert len(said) == 1 and said[0].startswith(
        "Exact-agreement check: gqa, linear stay within ±0.05 of the exact median at every seed and eval point "
        "(largest gap 0.0100, gqa). The exact median is the median validation loss of baseline, gqa, linear at each "
        "seed and eval point; baseline itself stands at most 0.0300 from it (one bf16 run, it drifts like the "
        "others), and the largest gap to baseline's curve alone is 0.0400 (gqa)"), said
    rows = {r["variant"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert float(rows["gqa"]["exact_max_loss_diff"]) == pytest.approx(0.01)
    assert float(rows["gqa"]["exact_max_loss_diff_to_baseline"]) == pytest.approx(0.04)
    assert rows["linear"]["exact_agreement"] == rows["gqa"]["exact_agreement"] == "agrees"

def test_tidy_runs_and_summary_with_intervals(tmp_path):
    kw = with_seeds(write_fixture(tmp_path / "tidy", gpu=True), noise={"timing.tokens_per_s": 0.01})
    doc, html, page, out = build(tmp_path, gpu=True, **kw)
    runs = list(csv.DictReader(open(out / "runs.csv")))
    assert {"run", "device", "commit", "variant", "seed", "metric", "value"} <= set(runs[0])
    tps = [r for r in runs if r["variant"] == "linear" and r["metric"] == "tokens_per_s"]
    assert sorted(int(r["seed"]) for r in tps) == [1, 2, 3]
    assert any(r["metric"] == "tokens_per_s_window_p10" for r in runs)
    assert [r["metric"] for r in runs if r["variant"] == "lsh"] == ["status"] * 3  # failed runs: listed, no values
    summary = {r["variant"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    lin = summary["linear"]
    assert int(lin["n"]) == 3
    assert float(lin["tokens_per_s_ci95_low"]) < float(lin["tokens_per_s"]) < float(lin["tokens_per_s_ci95_high"])
    assert summary["lsh"]["n"] == "0"
    # paired per seed against baseline: every seed moves both alike here, so the difference is exact
    lin_tps = {int(r["seed"]): float(r["value"]) for r in tps}
    base_tps = {int(r["seed"]): float(r["value"]) for r in runs
                if r["variant"] == "baseline" and r["metric"] == "tokens_per_s"}
    diff = sum(lin_tps[k] - base_tps[k] for k in lin_tps) / 3
    assert abs(float(lin["tokens_per_s_vs_baseline"]) - diff) < 1e-6 * abs(diff)
    assert float(lin["tokens_per_s_vs_baseline_ci95_low"]) <= diff <= float(lin["tokens_per_s_vs_baseline_ci95_high"])
    assert "tokens_per_s_vs_baseline" not in summary["baseline"] or not summary["baseline"]["tokens_per_s_vs_baseline"]


def test_exact_agreement_is_checked_seed_by_seed(tmp_path):
    kw = write_fixture(tmp_path / "exact2", gpu=True)
    _exact(kw, 1, shift=0.0)
    kw = with_seeds(kw)
    # seed 3 of 'gqa' (marked exact) leaves baseline's seed-3 curve
    p = next(q for q in kw["train"] if q.parent.name == "seed3" and json.loads(q.read_text())["variant"] == "gqa")
    d = json.loads(p.read_text())
    d["training"]["val_history"][1]["val_loss"] += 0.2
    p.write_text(json.dumps(d))
    doc, html, page, out = build(tmp_path, gpu=True, **kw)
    assert "suspect" in page.row_classes["gqa"]
    assert "seed 3" in doc["findings"][0] and "step 40" in doc["findings"][0]


# --- issue 23: the verdict, grouped failures, cache at lengths, provenance, units, plots -------


def test_verdict_by_length_names_ties_and_failures(gpu_report):
    """Per sweep length the fastest variant, and every variant whose p50-p90 range overlaps
    its range as a tie; the fastest exact variant beside it."""
    doc, html, page, out = gpu_report
    rows = {r["T"]: r for r in doc["verdict"]["length"]["rows"]}
    # baseline and gqa time the same at T=64 (p50 and p90 equal): a tie, said so
    assert [x["name"] for x in rows[64]["leaders"]] == ["baseline", "gqa"] and rows[64]["tie"]
    assert rows[64]["exact"]["name"] == "baseline"
    # at 512 baseline ran out of memory; linear and lsh (same times) tie, far ahead of gqa
    assert rows[512]["failed"] == ["baseline"]
    assert sorted(x["name"] for x in rows[512]["leaders"]) == ["linear", "lsh"]
    assert "512: linear (tie: lsh)" in doc["verdict"]["length"]["summary"]
    assert 'id="verdict"' in html and "Which variant should I use?" in html
    assert "tie: p50–p90 ranges overlap" in html


def test_verdict_with_one_seed_establishes_no_order(gpu_report):
    doc, html, page, out = gpu_report
    con = {c["what"]: c for c in doc["verdict"]["constraints"]}
    speed = con["Training speed"]
    assert speed["status"] == "one-seed" and speed["status_text"] == "one seed: order not established"
    assert speed["best"][0]["name"] == "linear" and speed["best"][0]["figure"] == "32,768 tok/s"
    assert con["GPU energy per token"]["best"][0]["name"] == "gqa"  # linear (faster) has no energy measured
    assert con["Inference cache at 32k tokens"]["best"][0]["name"] == "linear"  # fixed 64 KiB state
    assert con["Inference cache at 32k tokens"]["status"] == "clear"
    assert "One seed per variant" in " ".join(doc["verdict"]["caveats"])
    assert "one seed: order not established" in html


def test_verdict_with_three_seeds_claims_only_separated_leads(tmp_path):
    kw = with_seeds(write_fixture(tmp_path / "seeds", gpu=True),
                    noise={"timing.tokens_per_s": 0.01, "training.val_loss": 0.03})
    doc, html, page, out = build(tmp_path, gpu=True, **kw)
    con = {c["what"]: c for c in doc["verdict"]["constraints"]}
    speed = con["Training speed"]
    assert speed["status"] == "clear" and speed["best"][0]["name"] == "linear"
    assert "95 % interval" in speed["best"][0]["interval"] and "n = 3" in speed["best"][0]["interval"]
    loss = con["Quality: validation loss"]
    # the seeds move every variant's loss alike here: paired per seed, baseline is 0.02 ahead of gqa
    assert loss["status"] == "clear" and loss["best"][0]["name"] == "baseline", loss
    gqa = next(x for x in loss["next"] if x["name"] == "gqa")
    assert gqa["paired"].startswith("+0.02") and "per seed (95 % [0.0200, 0.0200], 3 seeds)" in gqa["paired"], gqa
    assert "vs the leader per seed" in html


def test_verdict_names_a_suspect_row_and_leaves_it_out(tmp_path):
    kw = write_fixture(tmp_path / "exact", gpu=True)
    _exact(kw, 2, shift=0.41)  # linear claims exactness but leaves baseline's curve
    doc, html, page, out = build(tmp_path, gpu=True, **kw)
    v = doc["verdict"]
    assert v["suspect"] == ["linear"]
    assert v["agreement"][0].startswith("linear computes baseline's function")
    assert all(x["name"] != "linear" for c in v["constraints"] for x in c.get("best", []))
    assert all(x["name"] != "linear" for r in v["length"]["rows"] for x in r["leaders"])
    assert "Suspect, left out of every recommendation: linear" in html


def test_object_reprs_never_reach_the_page(gpu_report):
    doc, html, page, out = gpu_report
    assert "object at 0x" not in html
    assert "nor in mode TransformGetItemToIndex" in html
    # the document itself is kept verbatim in results.json
    assert "object at 0x7fb98a120c80" in (out / "results.json").read_text()


def test_failures_and_unavailable_are_one_collapsed_section_grouped_by_reason(gpu_report):
    doc, html, page, out = gpu_report
    section = re.search(r'<details class="problems" id="problems">(.*?)</details>\s*<h2', html, re.S).group(1)
    assert "<details class=\"problems\" id=\"problems\" open" not in html  # collapsed
    reasons = re.findall(r"<li data-reason>(.*?)</li>", section, re.S)
    assert len(reasons) == len({n["reason"] for n in doc["unavailable"]})  # one line per reason
    nvml = [r for r in reasons if NO_NVML in r]
    assert len(nvml) == 1 and "linear" in nvml[0] and "energy.gpu_j_per_token" in nvml[0]
    assert ["lsh", "train", "failed", "oom", "12"] == page.failures[0][:5]


def test_cache_at_stated_lengths_fixed_states_shown_as_fixed(gpu_report):
    doc, html, page, out = gpu_report
    base, lin = page.rows["baseline"], page.rows["linear"]
    # baseline grows: 2048 bytes per token; one unit per column, named in the heading
    units = {c["key"]: c["unit"] for c in doc["columns"]}
    assert units["cache_512"] == "KiB" and base["cache_512"]["text"].startswith("1,024")
    assert units["cache_32768"] == "KiB" and base["cache_32768"]["text"].startswith("65,536")
    # linear: a fixed 64 KiB state at every length, said so
    for key in ("cache_512", "cache_4096", "cache_32768"):
        assert lin[key]["text"].startswith("64.0fixed"), lin[key]
        assert "fixed state" in lin[key]["title"]
    summary = {r["variant"]: r for r in doc["summary"]}
    assert summary["linear"]["cache_32768"] == 65_536 and summary["baseline"]["cache_4096"] == 4096 * 2048


def test_cache_capped_window_and_probe_disagreement(tmp_path):
    from attnbench.report import cache
    from attnbench.report.load import load_variants

    kw = write_fixture(tmp_path / "r", gpu=True)
    p = kw["train"][1]
    d = json.loads(p.read_text())
    d["model"]["cache_bytes_at_seq_len"] = 32 * 1024  # a 32-token window at 1024 bytes per token
    p.write_text(json.dumps(d))
    q = kw["probe"][1]
    pr = json.loads(q.read_text())
    for row in pr["decode"]:
        row["cache_bytes"] = row["batch_size"] * 32 * 1024
    q.write_text(json.dumps(pr))
    gqa = load_variants(kw["train"], kw["probe"], kw["sweep"])[1]
    sizes, shape = cache.profile(gqa, kw["config"])
    assert shape == "capped at 32 tokens"
    assert sizes[512].value == sizes[32768].value == 32 * 1024 and sizes[512].fixed
    for row in pr["decode"]:
        row["cache_bytes"] = 1
    q.write_text(json.dumps(pr))
    gqa = load_variants(kw["train"], kw["probe"], kw["sweep"])[1]
    sizes, shape = cache.profile(gqa, kw["config"])
    assert shape == "not recorded" and "disagrees with the probe" in sizes[512].reason
    # the train job's own per-length figures win when it records them
    d["model"]["cache_bytes_at_lengths"] = {"512": 7, "4096": 8, "32768": 9}
    p.write_text(json.dumps(d))
    gqa = load_variants(kw["train"], kw["probe"], kw["sweep"])[1]
    sizes, shape = cache.profile(gqa, kw["config"])
    assert [sizes[L].value for L in cache.LENGTHS] == [7, 8, 9]


def test_provenance_per_document_with_unknown_commit(gpu_report):
    doc, html, page, out = gpu_report
    prov = doc["provenance"]
    assert len(prov) == 12  # 4 train, 4 probe (lsh's says it was skipped), 4 sweep
    sweep_linear = next(r for r in prov if r["variant"] == "linear" and r["stage"] == "sweep")
    assert sweep_linear["commit"] == "unknown"
    assert sweep_linear["started"] == "2026-11-28 10:08:00" and sweep_linear["device_uuid"].startswith("GPU-")
    assert "no two of the 12 timed jobs overlapped on one GPU" in doc["verdict"]["overlap"]["text"]
    assert 'id="gpu-overlap"' not in html
    assert "9.1.0" in html  # cuDNN as its release, not 90100


def test_one_commit_named_short_or_full_is_one_commit_and_dirty_stays_dirty():
    from attnbench.report.provenance import short_commit
    full = "1529080d7a65e89238fe3ee857ae193123f25ad5"
    assert short_commit("1529080") == short_commit(full) == "1529080"
    assert short_commit(full + "-dirty") == "1529080-dirty"
    assert short_commit(None) == short_commit("") == "unknown"


def test_two_jobs_on_one_gpu_at_once_are_flagged(tmp_path):
    kw = write_fixture(tmp_path / "r", gpu=True)
    p = kw["train"][1]
    d = json.loads(p.read_text())
    d["job"] = {"started_utc": "2026-11-28T10:00:30.000+00:00", "finished_utc": "2026-11-28T10:00:55.000+00:00"}
    p.write_text(json.dumps(d))
    doc, html, page, out = build(tmp_path, gpu=True, **kw)
    pairs = doc["verdict"]["overlap"]["pairs"]
    assert len(pairs) == 1 and "baseline train" in pairs[0]["a"] and "gqa train" in pairs[0]["b"]
    alarm = re.search(r'<div class="alarm" id="gpu-overlap" role="alert">(.*?)</div>', html, re.S).group(1)
    assert "not trustworthy" in alarm and html.index('id="gpu-overlap"') < html.index('id="verdict"')


def test_documents_without_job_times_say_not_recorded(cpu_report):
    doc, html, page, out = cpu_report
    assert doc["verdict"]["overlap"]["text"].startswith("not recorded")
    assert all(r["started"] == "not recorded" and r["device_uuid"] == "not recorded" for r in doc["provenance"])


def test_power_plots_share_one_scale_and_average_the_timed_windows(gpu_report):
    doc, html, page, out = gpu_report
    figs = dict(re.findall(r'<figure class="small" id="(plot-power-\d)">(.*?)</figure>', html, re.S))
    ticks = {fid: re.findall(r"text-anchor: end[^>]*>([^<]+)</text>", body) for fid, body in figs.items()
             if "<svg" in body}
    assert len(ticks) == 3 and len({tuple(t) for t in ticks.values()}) == 1, ticks  # one y scale
    cap = re.search(r"<figcaption>(.*?)</figcaption>", figs["plot-power-0"], re.S).group(1)
    assert "Timed windows (shaded, 4): mean 300 W by the energy counter" in cap
    # the fixture's samples: 80 W idle before 0.5 s, ~280 W after; the windows hold only the latter
    inside = float(re.search(r", (\d+) W over the \d+ samples inside them", cap).group(1))
    assert inside > 250


def test_one_unit_per_column_and_estimates_labelled(gpu_report):
    doc, html, page, out = gpu_report
    units = {c["key"]: c["unit"] for c in doc["columns"]}
    assert units["peak_allocated_bytes"] == "GiB" and units["gpu_j_per_token"] == "mJ/token"
    assert units["energy_total_kwh"] == "Wh" and units["co2eq_kg"] == "g"
    assert page.rows["baseline"]["peak_allocated_bytes"]["text"].startswith("0.879")
    assert page.rows["gqa"]["co2eq_kg"]["text"].startswith("0.800")
    for row in page.rows.values():  # no cell repeats a unit: its heading has it
        for cell in row.values():
            assert not re.search(r"\d\s*(GiB|MiB|KiB|kWh|Wh|mJ|kg|ms)\b", cell["text"]), cell
    assert page.rows["baseline"]["energy_total_kwh"]["text"].startswith("1.30est.")
    assert "CPU power estimated by CodeCarbon (cpu_load)" in page.rows["baseline"]["energy_total_kwh"]["title"]


def test_error_bars_on_means_over_seeds(tmp_path):
    kw = with_seeds(write_fixture(tmp_path / "seeds", gpu=True),
                    noise={"memory.peak_allocated_bytes": 0.05, "energy.gpu_j_per_token": 0.05,
                           "training.val_loss": 0.03})
    doc, html, page, out = build(tmp_path, gpu=True, **kw)
    one = build(tmp_path / "one", gpu=True)[1]
    for fid, words in (("plot-mem-peak_allocated_bytes", "error bars: 95 % interval"),
                       ("plot-energy-loss", "95 % intervals in both directions"),
                       ("plot-loss-step", "mean over seeds with its 95 % interval")):
        body = re.search(rf'id="{fid}">(.*?)</figure>', html, re.S).group(1)
        assert words in body, fid
        # the interval bars are drawn: more strokes than the one-seed figure
        single = re.search(rf'id="{fid}">(.*?)</figure>', one, re.S).group(1)
        assert body.count("<path") > single.count("<path"), fid


def test_a_sweep_scope_not_configured_says_so(tmp_path):
    kw = write_fixture(tmp_path / "r", gpu=True)
    for p in kw["sweep"]:
        d = json.loads(p.read_text())
        d["points"] = [pt for pt in d["points"] if pt["scope"] == "attention"]
        p.write_text(json.dumps(d))
    config = {**kw["config"], "sweep": {"scopes": ["attention"]}}
    doc, html, page, out = build(tmp_path, gpu=True, **{**kw, "config": config})
    assert page.figures["plot-sweep-block"]["missing"] == (
        "not measured: the sweep did not run the block scope (sweep.scopes: attention)")


def test_runs_of_other_data_or_settings_are_stale_and_left_out(tmp_path):
    """Issue 22, 1: the report checks each run's recorded tokens hash against this report's
    stats.json and its recorded settings against the config; a mismatch is named first and the
    run is used nowhere (the dataset in the header stays this report's)."""
    from attnbench import settings as S

    kw = write_fixture(tmp_path / "stale", gpu=True)
    stats = json.loads(kw["stats"].read_text())
    stats["tokens_sha256"] = "a" * 64
    kw["stats"].write_text(json.dumps(stats))
    config = S.validate({"variants": {v: {} for v in VARIANTS}, "data": {"max_len": 128},
                         "train": {"seq_len": 128}, "probe": {"prompt_lens": [64]},
                         "model": {"n_layer": 2, "n_head": 4, "n_embd": 128, "block_size": 256}})
    for p in kw["train"]:
        d = json.loads(p.read_text())
        d["data"] = {"tokens_sha256": "a" * 64}
        d["settings"] = S.stage_settings(config, "train", d["variant"])
        if d["variant"] == "gqa":
            d["data"]["tokens_sha256"] = "b" * 64        # trained on other data
        if d["variant"] == "linear":
            d["settings"]["train"]["lr"] = 0.123          # trained with other settings
        p.write_text(json.dumps(d))
    doc, html, page, out = build(tmp_path, gpu=True, **{**kw, "config": S.report_settings(config)})
    first = doc["findings"][:2]
    assert any(f.startswith("Stale results left out: gqa") and "other tokens" in f for f in first), first
    assert any(f.startswith("Stale results left out: linear") and "train.lr: 0.123 (run)" in f for f in first), first
    assert "failed" in page.row_classes["gqa"] and "failed" in page.row_classes["linear"]
    assert "suspect" not in page.row_classes["baseline"] and "failed" not in page.row_classes["baseline"]
    runs = list(csv.DictReader(open(out / "runs.csv")))
    assert {r["status"] for r in runs if r["variant"] in ("gqa", "linear")} == {"stale"}


def test_prefill_timing_error_and_unstable_timing_are_shown_not_hidden(tmp_path):
    """A probe that timed a longer prompt faster (a timing error) or never reached p90/p50 < 1.2
    shows it under the value and in its title; the others show their mode."""
    kw = write_fixture(tmp_path / "results", gpu=True)
    q = kw["probe"][0]
    pr = json.loads(q.read_text())
    pr["prefill_flags"] = ["batch 1 (reported): 512 tokens faster than 128 tokens (p50 3.2 vs 5.1 ms): timing error"]
    q.write_text(json.dumps(pr))
    q1 = kw["probe"][1]
    pr1 = json.loads(q1.read_text())
    for row in pr1["prefill"]:
        row.update(timing_stable=False, p90_over_p50=1.61, prefill_mode="eager")
    q1.write_text(json.dumps(pr1))
    out = tmp_path / "report"
    build_report(out_dir=out, **kw)
    page = Page()
    page.feed((out / "index.html").read_text())
    first, second = VARIANTS[0], VARIANTS[1]
    assert "flagged: batch 1 (reported): 512 tokens faster" in page.rows[first]["prefill_ms_p50"]["title"]
    assert "timing error" in page.rows[first]["prefill_ms_p50"]["text"]
    assert "timing not stable (p90/p50 1.61)" in page.rows[second]["prefill_ms_p50"]["title"]
    assert "unstable" in page.rows[second]["prefill_ms_p50"]["text"]


def test_an_eager_series_flag_does_not_mark_the_graph_figure_shown(tmp_path):
    """H200, fb47336: eager prefill at batch 1 is launch-bound and its order by length is noise
    (sliding_window 8.6 ms at 128 tokens, 4.2 at 512) while the CUDA-graph figures shown are
    in order: the eager flag is in the cell's details, not a 'timing error' on the figure."""
    kw = write_fixture(tmp_path / "results", gpu=True)
    q = kw["probe"][0]
    pr = json.loads(q.read_text())
    pr["prefill_flags"] = ["batch 1 (eager): 512 tokens faster than 128 tokens (p50 4.25 vs 8.58 ms, p90 5.09): "
                           "timing error"]
    q.write_text(json.dumps(pr))
    out = tmp_path / "report"
    build_report(out_dir=out, **kw)
    page = Page()
    page.feed((out / "index.html").read_text())
    cell = page.rows[VARIANTS[0]]["prefill_ms_p50"]
    assert "timing error" not in cell["text"]
    assert "other series flagged (not the figure shown): batch 1 (eager)" in cell["title"]


def test_a_run_without_sweep_documents_yet_renders_and_says_so(tmp_path):
    """A partial run (trainings and probes done, no sweep yet: the H200 run of session 6
    crashed the report here) renders; the length verdict says the sweep is not measured."""
    kw = write_fixture(tmp_path / "r", gpu=True)
    doc, html, page, out = build(tmp_path, gpu=True, **{**kw, "sweep": []})
    body = re.search(r"By sequence length(.*?)</p>", html, re.S).group(1)
    assert "not measured: for no variant: no sweep result document" in body, body
    assert (out / "results.csv").exists()


def test_a_kernel_that_differs_by_seed_is_shown_with_its_seeds(tmp_path):
    """H200, fb47336: `sdpa` under `auto` ran FLASH in seed 1337 and EFFICIENT in seed 1338; the
    cell showed one kernel for a mean over both.  Now every kernel with its seeds is in the cell."""
    kw = with_seeds(write_fixture(tmp_path / "seeds", gpu=True), seeds=(1337, 1338))
    for p in kw["train"]:
        d = json.loads(p.read_text())
        if d["variant"] == VARIANTS[0] and d["provenance"]["seed"] == 1338:
            d["kernel"] = "sdpa:auto->efficient"
            p.write_text(json.dumps(d))
    doc, html, page, out = build(tmp_path, gpu=True, **kw)
    first = json.loads(kw["train"][0].read_text())["kernel"]
    text = page.rows[VARIANTS[0]]["kernel"]["text"]
    assert f"{first} (seed 1337)" in text and "sdpa:auto->efficient (seed 1338)" in text, text
    assert "differs by seed" in text
    assert "differs by seed" not in page.rows[VARIANTS[1]]["kernel"]["text"]


def test_decode_cell_says_how_much_of_its_energy_window_was_decoding(tmp_path):
    """A decode energy window holds whole runs, each with its prompt's prefill: the cell's
    details give the decode steps' share of it."""
    kw = write_fixture(tmp_path / "results", gpu=True)
    q = kw["probe"][0]
    pr = json.loads(q.read_text())
    for row in pr["decode"]:
        row["decode_share_of_window"] = 0.91
    q.write_text(json.dumps(pr))
    out = tmp_path / "report"
    build_report(out_dir=out, **kw)
    page = Page()
    page.feed((out / "index.html").read_text())
    title = page.rows[VARIANTS[0]]["decode_ms_per_token_p50"]["title"]
    assert "energy window: decode steps 91 %, the rest each run's prompt prefill" in title, title


def test_verdict_names_the_variants_that_lack_an_interval(tmp_path):
    """A partial run (H200, fb47336): most variants have two seeds, some one. No order is
    claimed, and the verdict names the variants with one finished run instead of saying
    'one seed' of a leader that has two."""
    kw = with_seeds(write_fixture(tmp_path / "seeds", gpu=True), seeds=(1, 2),
                    noise={"timing.tokens_per_s": 0.01})
    single = VARIANTS[1]
    kw["train"] = [p for p in kw["train"]
                   if not (json.loads(p.read_text())["variant"] == single and "seed2" in str(p))]
    doc, html, page, out = build(tmp_path, gpu=True, **kw)
    speed = {c["what"]: c for c in doc["verdict"]["constraints"]}["Training speed"]
    assert speed["status"] == "one-seed"
    assert speed["status_text"] == f"order not established: {single} has one finished run (no interval)"


def test_tokens_per_gpu_busy_second_takes_the_hosts_share_out(tmp_path):
    """H200, fb47336: one configuration's tokens/s spread 13-62 % over seeds while tokens/s divided
    by GPU busy agreed within 2 %: at batch 16 the host set the pace by a varying amount.  The
    table gives that figure, the verdict ranks it as its own constraint and says the loop was
    host-bound; a document without GPU busy gets the reason, never a number."""
    kw = with_seeds(write_fixture(tmp_path / "seeds", gpu=True))
    busy_of = {1: 0.6, 2: 0.8, 3: 1.0}
    rates = {}
    for p in kw["train"]:
        d = json.loads(p.read_text())
        seed, name = d["provenance"]["seed"], d["variant"]
        if d.get("status") != "ok":
            continue
        base = d["timing"]["tokens_per_s"]
        d["timing"]["tokens_per_s"] = base * busy_of[seed]  # the host took the rest
        d.setdefault("energy", {})["gpu_busy"] = None if name == VARIANTS[1] else busy_of[seed]
        rates[name] = base
        p.write_text(json.dumps(d))
    doc, html, page, out = build(tmp_path, gpu=True, **kw)
    first = page.rows[VARIANTS[0]]["tokens_per_busy_s"]
    assert f"{rates[VARIANTS[0]]:,.0f}".split(",")[0] in first["text"], first
    assert "95 % interval" in first["title"]
    missing = page.rows[VARIANTS[1]]["tokens_per_busy_s"]
    assert missing["text"] == "—" and "busy" in missing["title"].lower(), missing
    caveat = " ".join(doc["verdict"]["caveats"])
    assert "GPU busy in the timed windows: 60–100 %" in caveat and "host" in caveat, caveat
    busy_row = {c["what"]: c for c in doc["verdict"]["constraints"]}["Training speed per GPU-busy second"]
    assert busy_row["status"] in ("clear", "tie") and busy_row["best"], busy_row


def test_no_host_bound_caveat_when_the_gpu_stayed_busy(tmp_path):
    kw = write_fixture(tmp_path / "r", gpu=True)
    for p in kw["train"]:
        d = json.loads(p.read_text())
        d.setdefault("energy", {})["gpu_busy"] = 0.97
        p.write_text(json.dumps(d))
    doc, html, page, out = build(tmp_path, gpu=True, **kw)
    assert not any("GPU busy in the timed windows" in c for c in doc["verdict"]["caveats"])


def test_length_verdict_of_a_partial_run_names_the_variants_it_compares(tmp_path):
    """H200, fb47336 after session 7: two of nine sweeps done; '512-8k: flex' must not read as
    flex beating all nine."""
    kw = write_fixture(tmp_path / "r", gpu=True)
    keep = [p for p in kw["sweep"] if json.loads(p.read_text()).get("status") == "ok"][:1]
    doc, html, page, out = build(tmp_path, gpu=True, **{**kw, "sweep": keep})
    length = doc["verdict"]["length"]
    kept = json.loads(keep[0].read_text())["variant"]
    assert length["compared"] == [kept], length
    assert "no sweep result document" in length["absent"]
    assert all(v in length["absent"] for v in VARIANTS if v != kept)
    assert f"Compared: {kept} only; no sweep for" in html


def test_under_cuda_graphs_the_memory_column_shows_the_warm_up_peak_and_says_so(tmp_path):
    """CUDA-graph replays allocate from a pool the allocator does not count: the timed peak is null
    with its reason, the warm-up steps (which record the graphs) hold the figure.  Once one run
    needs the warm-up figure, every row shows its warm-up peak (no ratio mixes the two phases);
    a run without one is unavailable, not its timed figure."""
    kw = write_fixture(tmp_path / "results", gpu=True)

    def edit(variant, **memory):
        path = next(p for p in kw["train"] if Path(p).parent.name == variant)
        doc = json.loads(Path(path).read_text())
        doc["memory"].update(memory)
        if memory.get("peak_allocated_bytes", 0) is None:
            doc.setdefault("unavailable", {})["memory.peak_allocated_bytes"] = "compile_mode reduce-overhead replays"
        Path(path).write_text(json.dumps(doc))

    edit("gqa", peak_allocated_bytes=None, peak_allocated_warmup_bytes=3 * 2**30)
    edit("baseline", peak_allocated_warmup_bytes=2 * 2**30)
    out = tmp_path / "report"
    doc = build_report(out_dir=out, **kw)
    page = Page()
    page.feed((out / "index.html").read_text(encoding="utf-8"))
    cell = page.rows["gqa"]["peak_allocated_bytes"]
    assert cell["text"].startswith("3.00"), cell
    assert "warm-up steps, which record the step's CUDA graphs" in cell["title"]
    assert page.rows["baseline"]["peak_allocated_bytes"]["text"].startswith("2.00")  # its warm-up, not its timed peak
    assert page.rows["linear"]["peak_allocated_bytes"]["text"] == "—"  # no warm-up figure: unavailable
    assert next(c for c in doc["columns"] if c["key"] == "peak_allocated_bytes")["measured_at"] == "warm-up steps"


def test_a_tie_that_leaves_out_a_better_mean_says_why(tmp_path):
    """Per seed, gqa is always 0.02 behind baseline (separated), linear swings around it (tied) with a
    worse mean than gqa's: the finding names the tie and says why gqa, with the better mean, is not in it."""
    kw = with_seeds(write_fixture(tmp_path / "seeds", gpu=True))
    losses = {"baseline": (4.90, 4.90, 4.90), "gqa": (4.920, 4.921, 4.919), "linear": (4.80, 5.00, 5.05)}
    for p in kw["train"]:
        d = json.loads(p.read_text())
        if d.get("status") == "ok":
            per_seed = losses.get(d["variant"], (6.0, 6.0, 6.0))
            d["training"]["val_loss"] = per_seed[d["provenance"]["seed"] - 1]
            p.write_text(json.dumps(d))
    doc, html, page, out = build(tmp_path, gpu=True, **kw)
    text = next(f for f in doc["findings"] if f.startswith("Lowest validation loss"))
    assert "tie within noise between baseline" in text and "linear" in text.split(" (the paired")[0], text
    assert "gqa 4.92" in text and "a better mean than linear but is separated from baseline per seed" in text, text
    # the verdict says the same beside gqa in its "Next" cell
    loss = next(c for c in doc["verdict"]["constraints"] if c["what"] == "Quality: validation loss")
    assert loss["status"] == "tie" and [x["name"] for x in loss["best"]] == ["baseline", "linear"], loss
    gqa = next(x for x in loss["next"] if x["name"] == "gqa")
    assert gqa["beside"] == ("a better mean than linear, which ties with the leader because its comparison with it "
                             "is less certain (a per-seed gap that varies more, or fewer seeds shared)"), gqa
    assert gqa["beside"] in html
    # in the tie's Figure cell each figure names its variant (the Use cell lists them apart)
    row = html.split('data-constraint="Quality: validation loss"')[1].split("</tr>")[0]
    figures = row.split('data-label="Figure">')[1].split("</td>")[0]
    assert figures.startswith("<strong>baseline</strong> 4.9") and "<br><strong>linear</strong> " in figures, figures


def test_sweep_energy_of_documents_before_its_own_window_is_not_plotted(tmp_path):
    """A sweep.json whose energy came from the timing's window of milliseconds (before 5ebf1d6; 5-34 kW
    implied on the H100/H200) is not drawn as energy per call: the plot says why."""
    kw = write_fixture(tmp_path / "old", gpu=True)
    for path in kw["sweep"]:
        d = json.loads(path.read_text())
        for p in d["points"]:
            for m in ("forward", "forward_backward"):
                if isinstance(p.get(m), dict):
                    for key in ("energy_window_s", "calls_in_energy_window", "gpu_w"):
                        p[m].pop(key, None)
        path.write_text(json.dumps(d))
    doc, html, page, out = build(tmp_path, gpu=True, **kw)
    fig = page.figures["plot-sweep-energy"]
    assert not fig["svg"] and "before 5ebf1d6" in fig["missing"], fig


def test_the_lengths_from_which_a_variant_that_is_not_exact_is_ahead_of_the_fastest_exact_one():
    """Beyond both spreads (its p90 below the best exact p50) at that length and every longer one; one
    ahead only at its longest compared length says so; one never ahead is named; exact variants are the
    yardstick.  A length it failed at while an exact one ran counts against it; one where every exact
    variant failed and it ran counts for it, and is said."""
    from types import SimpleNamespace

    from attnbench.report.charts import Series
    from attnbench.report.findings import _overtakes_exact

    def series(name, p50s, spread=1.05, failed=()):
        pts = [(T, y) for T, y in zip([512, 2048, 8192], p50s) if y is not None]
        return Series(name, "#000", pts, yerr=[(y, y * spread) for _, y in pts], failed=[(T, "oom") for T in failed])
    variants = [SimpleNamespace(name=n, exact=e, suspect=False) for n, e in
                (("sdpa", True), ("flash2", True), ("window", False), ("linear", False), ("mla", False), ("gqa", False))]
    found = _overtakes_exact(variants, [
        series("sdpa", [1.0, 2.0, 6.0]), series("flash2", [1.1, 1.9, 7.0]),   # best exact: 1.0, 1.9, 6.0
        series("window", [1.5, 1.5, 1.5]),                                   # ahead from 2k
        series("linear", [4.0, 4.0, 4.0]),                                   # ahead at 8k only
        series("mla", [0.5, 1.0, 5.9]),                                      # ahead early, within the spread at 8k
        series("gqa", [0.5, 1.0, 2.0])])                                     # ahead everywhere
    assert found == [
        "Variants that are not exact, faster than the fastest exact one at each length from some T on (their p90 "
        "below its p50, attention forward+backward): gqa at every length from 512 (0.500 ms against sdpa 1.00 ms at "
        "512); window from 2k (1.50 ms against flash2 1.90 ms at 2k); linear at 8k only, its longest compared "
        "(4.00 ms against sdpa 6.00 ms at 8k).",
        "Not exact and not ahead of the fastest exact one at their longest compared length: mla (8k)."], found
    # out of memory at 8k where sdpa ran: not ahead there, so not "from 2k"
    found = _overtakes_exact(variants[:3], [series("sdpa", [1.0, 2.0, 6.0]), series("flash2", [1.1, 1.9, 7.0]),
                                            series("window", [1.5, 1.5, None], failed=[8192])])
    assert found == ["Not exact and not ahead of the fastest exact one at their longest compared length: window (8k)."]
    # every exact variant out of memory at 8k where it ran: ahead there, and said
    found = _overtakes_exact(variants[:3], [series("sdpa", [1.0, 2.0, None], failed=[8192]),
                                            series("flash2", [1.1, 1.9, None], failed=[8192]),
                                            series("window", [1.5, 1.5, 1.5])])
    assert found == [
        "Variants that are not exact, faster than the fastest exact one at each length from some T on (their p90 "
        "below its p50, attention forward+backward): window from 2k (1.50 ms against flash2 1.90 ms at 2k; every "
        "exact variant failed at 8k)."], found


def test_loss_per_energy_is_a_mean_over_seeds_with_its_interval(tmp_path):
    """Quality bought per kJ: a column with each variant's mean over its seeds, ranked in the verdict and
    the findings by the paired per-seed rule like every other figure (it had been one seed's value)."""
    kw = with_seeds(write_fixture(tmp_path / "seeds", gpu=True), noise={"efficiency.loss_drop_per_kj": 0.01})
    doc, html, page, out = build(tmp_path, gpu=True, **kw)
    row = next(c for c in doc["verdict"]["constraints"] if c["what"] == "Quality per energy: loss drop per kJ")
    assert row["status"] == "clear" and row["best"][0]["name"] == "baseline", row
    assert row["best"][0]["figure"] == "0.300 nats/kJ" and "n = 3" in row["best"][0]["interval"], row
    text = next(f for f in doc["findings"] if f.startswith("Most training-loss reduction per kJ"))
    assert "baseline 0.300 nats/kJ [" in text and "n = 3 seeds" in text, text


def test_figures_of_three_seeds_are_not_the_first_seeds(tmp_path):
    """results.csv's further columns are means over the finished seeds (with their count), one seed's
    decode that differs from the full forward is named, and results.json holds every seed's documents."""
    kw = with_seeds(write_fixture(tmp_path / "seeds", gpu=True), noise={"energy.gpu_mean_w": 0.1})
    means = {}
    for p in kw["train"]:
        d = json.loads(p.read_text())
        if d.get("status") == "ok" and d["energy"].get("gpu_mean_w") is not None:
            means.setdefault(d["variant"], []).append(d["energy"]["gpu_mean_w"])
    for p in kw["probe"]:  # the fixture's probes match none of these seeds: add one for gqa's seed 2, whose decode differs
        if json.loads(p.read_text())["variant"] == "gqa":
            q = tmp_path / "seeds" / "gqa-seed2-probe.json"
            d = json.loads(p.read_text())
            d["provenance"]["seed"], d["decode_matches_full_forward"] = 2, False
            q.write_text(json.dumps(d))
            kw = {**kw, "probe": [*kw["probe"], q]}
    doc, html, page, out = build(tmp_path, gpu=True, **kw)
    rows = {r["variant"]: r for r in csv.DictReader((out / "results.csv").open())}
    for name, ws in means.items():
        assert float(rows[name]["gpu_mean_w"]) == pytest.approx(sum(ws) / len(ws)), name
        assert rows[name]["seeds_finished"] == "3"
    runs = {v["variant"]: v["runs"] for v in doc["variants"]}
    assert [r["seed"] for r in runs["linear"]] == [1, 2, 3] and runs["linear"][2]["train"]["provenance"]["seed"] == 3
    assert any(f.startswith("Cached decoding did NOT reproduce") and "gqa" in f for f in doc["findings"]), doc["findings"]


def test_a_seed_that_differs_from_the_first_is_not_hidden(tmp_path):
    """A failed third seed shows in results.csv's status, a metric only seed 2 lacks has its reason listed,
    and a metric the first seed lacks still gets a cell from the seeds that have it."""
    kw = with_seeds(write_fixture(tmp_path / "seeds", gpu=True))
    for p in kw["train"]:
        d = json.loads(p.read_text())
        if d["variant"] != "linear" or d.get("status") != "ok":
            continue
        seed = d["provenance"]["seed"]
        if seed == 3:
            d.update(status="failed", failure={"kind": "oom", "message": "CUDA out of memory", "step": 5})
        if seed == 2:
            d["unavailable"] = {**d.get("unavailable", {}), "energy.idle_w": "idle baseline skipped on seed 2"}
        if seed == 1:
            d["timing"]["tokens_per_s"] = None
        p.write_text(json.dumps(d))
    doc, html, page, out = build(tmp_path, gpu=True, **kw)
    rows = {r["variant"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert rows["linear"]["status"] == "ok (seed 1, 2); failed (seed 3)", rows["linear"]["status"]
    assert rows["linear"]["failure_kind"] == "oom" and rows["linear"]["failure_message"] == "seed 3: CUDA out of memory"
    assert any(n["reason"] == "idle baseline skipped on seed 2" and n["variants"] == ["linear"]
               for n in doc["unavailable"]), doc["unavailable"]
    assert rows["linear"]["tokens_per_s"] not in ("", None)  # seed 2's figure (seed 1 lacks it)


def test_a_section_wide_reason_is_the_reason_of_its_null_figures(tmp_path):
    """metrics.json's efficiency section says why in one string ("no finite losses or no energy"): the
    loss-per-kJ cell and the verdict give that reason, not "no reason recorded"."""
    doc, html, page, out = build(tmp_path, gpu=False, **write_fixture(tmp_path / "cpu", gpu=False))
    row = next(c for c in doc["verdict"]["constraints"] if c["what"] == "Quality per energy: loss drop per kJ")
    assert row["status"] == "missing" and "no energy" in row["status_text"], row


def test_paired_ratio_bound_clear_of_one_never_reads_as_one():
    # a "clear" finding's per-seed ratio interval lies wholly on one side of 1; three significant
    # figures printed 1.003 as "1", an interval that seemed to touch the leader
    from attnbench.report.format import ratio

    assert ratio(1.003) == "1.003" and ratio(0.96) == "0.960" and ratio(1.0) == "1.000"
    assert ratio(1.0004) == "1.0004" and ratio(0.99996) == "0.99996"
    assert ratio(0.0123) == "0.0123" and ratio(2.5) == "2.500"
    assert all(ratio(x) != "1.000" for x in (1.0004, 0.9996, 1.00001))
