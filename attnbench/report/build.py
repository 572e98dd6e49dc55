"""Putting the report together: read the documents, compute the table, plots and findings,
render the page template and write ``index.html``, ``results.csv`` and ``results.json``."""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import math
from pathlib import Path

from markupsafe import Markup

from ..results import atomic_write_json, atomic_write_text
from . import agreement, stale, provenance, tidy, verdict
from .findings import failures, findings, problems, run_header, unavailable_notes
from .load import BASELINE, _common_reason, _read_json, load_variants
from .plots import (plot_energy_vs_loss, plot_inference, plot_loss_vs_baseline, plot_loss_vs_energy,
                    plot_loss_vs_step, plot_memory, plot_power, plot_sweep)
from .table import _csv_text, columns, csv_rows, fill_cells, probe_context

REPORT_SCHEMA = "attnbench.report/1"
# the templates live at the repository root, beside the committed reports
TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "reports" / "templates"
TEMPLATE = "report.html.j2"

# The one script in the page: sorts the summary table.  Its hash goes into the CSP.
SORT_SCRIPT = """
(function () {
  var table = document.getElementById("summary");
  if (!table) { return; }
  var body = table.tBodies[0];
  var buttons = table.querySelectorAll("thead button[data-col]");
  function key(row, col) {
    var cell = row.cells[col];
    var v = cell ? cell.getAttribute("data-sort") : "";
    return v === null ? "" : v;
  }
  function sortBy(btn) {
    var col = Number(btn.getAttribute("data-col"));
    var th = btn.parentNode;
    var cur = th.getAttribute("aria-sort");
    // first click: best first (data-better="max" sorts descending); next clicks toggle
    var asc = cur ? cur !== "ascending" : btn.getAttribute("data-better") !== "max";
    var numeric = btn.getAttribute("data-type") === "num";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, col), y = key(b, col);
      if (x === "" && y === "") { return 0; }
      if (x === "") { return 1; }
      if (y === "") { return -1; }
      var c = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
  }
  buttons.forEach(function (btn) {
    btn.addEventListener("click", function () { sortBy(btn); });
  });
})();
""".strip()


def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env


def assess(train: list[Path], probe: list[Path], sweep: list[Path], stats: Path | None, config: dict) -> dict:
    """What the report states, from the documents, before any plot or file: the variants with their
    cells, the header, the verdict and the findings (the repository's README fragments quote the
    findings of a committed run from here)."""
    config = config or {}
    now = _dt.datetime.now(_dt.timezone.utc)
    stats_doc, stats_reason = _read_json(Path(stats), "stats") if stats else (None, "no stats.json given")
    variants = load_variants(list(train), list(probe or []), list(sweep or []),
                             stale=stale.checker(stats_doc, config))
    prov_rows = provenance.rows(variants)
    overlap = provenance.overlaps(prov_rows)
    header = run_header(variants, stats_doc, stats_reason, config, now, provenance.summary(variants, prov_rows))
    agreement.check(variants, (config.get("report") or {}).get("exact_tolerance"))
    ctx = probe_context(variants, config)
    cols = columns(ctx)
    fill_cells(variants, cols, ctx)
    fails = failures(variants)
    return {"config": config, "stats": stats_doc, "variants": variants, "provenance": prov_rows, "header": header,
            "ctx": ctx, "columns": cols, "notes": unavailable_notes(variants), "failures": fails,
            "findings": findings(variants, header, ctx, fails, config),
            "verdict": verdict.build(variants, cols, header, config, overlap)}


def build_report(train: list[Path], probe: list[Path], sweep: list[Path], stats: Path, config: dict,
                 out_dir: Path) -> dict:
    """Write ``index.html``, ``results.csv`` and ``results.json`` into ``out_dir``.

    ``train``/``probe``/``sweep``: one JSON path per variant (config order for ``train``;
    probe and sweep are matched by variant name).  Returns the ``results.json`` document
    (schema ``attnbench.report/1``) with ``files`` naming what was written.
    """
    out_dir = Path(out_dir)
    a = assess(train, probe, sweep, stats, config)
    config, stats_doc, variants, prov_rows, header = a["config"], a["stats"], a["variants"], a["provenance"], a["header"]
    ctx, cols, notes, fails, found, ruling = a["ctx"], a["columns"], a["notes"], a["failures"], a["findings"], a["verdict"]
    sweep_main, sweep_more = plot_sweep(variants, config)
    plots = {
        "loss_step": plot_loss_vs_step(variants),
        "loss_delta": plot_loss_vs_baseline(variants),
        "loss_energy": plot_loss_vs_energy(variants),
        "energy_loss": plot_energy_vs_loss(variants),
        "power": plot_power(variants),
        "memory": plot_memory(variants, config),
        "inference": plot_inference(variants, ctx),
        "sweep": sweep_main,
        "sweep_more": sweep_more,
    }
    names, rows = csv_rows(variants, cols)

    document = {
        "schema": REPORT_SCHEMA,
        "header": header,
        "verdict": ruling,
        "findings": found,
        "columns": [{"key": c.key, "label": c.label, "unit": c.unit.name if c.unit else None, "better": c.better,
                     "help": c.help, "measured_at": c.sub or None} for c in cols],
        "summary": rows,
        "failures": fails,
        "unavailable": notes,
        "provenance": [{k: val for k, val in r.items() if k not in ("start", "end")} for r in prov_rows],
        "stats": stats_doc,
        "config": config,
        "variants": [{"variant": v.name, "train": v.train.data, "probe": v.probe.data, "sweep": v.sweep.data,
                      "files": {"train": str(v.train.path) if v.train.path else None,
                                "probe": str(v.probe.path) if v.probe.path else None,
                                "sweep": str(v.sweep.path) if v.sweep.path else None},
                      # every seed's documents (train/probe above: the first finished seed's, which the plots
                      # of one run show)
                      "runs": [{"seed": r.seed, "stale": r.stale, "train": r.train.data, "probe": r.probe.data,
                                "files": {"train": str(r.train.path) if r.train.path else None,
                                          "probe": str(r.probe.path) if r.probe.path else None}}
                               for r in v.runs] if len(v.runs) > 1 else None}
                     for v in variants],
    }
    script_hash = base64.b64encode(hashlib.sha256(SORT_SCRIPT.encode()).digest()).decode()
    # Host RSS is in the table only when no variant has GPU memory (CPU runs); always in CSV/plots.
    # A column no variant has a value for is left out of the page's table (narrower on every
    # screen and page) and named under it with its reason; CSV and JSON keep it.
    has_gpu_mem = any(isinstance(v.cells["peak_allocated_bytes"].value, (int, float)) for v in variants)
    empty = [c for c in cols if variants and all(v.cells[c.key].value is None for v in variants)]
    table_cols = [c for c in cols if c not in empty and not (c.key == "peak_rss_bytes" and has_gpu_mem)]
    empty_cols = [{"label": c.label, "reason": _common_reason((v.name, v.cells[c.key].reason) for v in variants)}
                  for c in empty]
    html = _env().get_template(TEMPLATE).render(
        header=header, variants=variants, columns=table_cols, findings=found, verdict=ruling,
        problems=problems(fails, notes, len(variants), any(len(v.runs) > 1 for v in variants)),
        n_failures=len(fails), n_notes=len(notes),
        provenance=prov_rows, empty_columns=empty_cols, plots=plots, ctx=ctx, baseline=BASELINE,
        has_baseline=any(v.name == BASELINE and v.ok for v in variants),
        script=Markup(SORT_SCRIPT), script_hash=script_hash,
    )
    files = {"html": str(out_dir / "index.html"), "csv": str(out_dir / "results.csv"),
             "json": str(out_dir / "results.json"), "runs": str(out_dir / "runs.csv"),
             "summary": str(out_dir / "summary.csv")}
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = tidy.runs_frame(variants, cols, ctx, header)
    atomic_write_text(out_dir / "runs.csv", runs.to_csv(index=False))
    atomic_write_text(out_dir / "summary.csv", tidy.summary_frame(runs, [v.name for v in variants]).to_csv(index=False))
    atomic_write_text(out_dir / "results.csv", _csv_text(names, rows))
    atomic_write_json(out_dir / "results.json", _jsonable(document))
    atomic_write_text(out_dir / "index.html", html)
    document["files"] = files
    return document


def _jsonable(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
