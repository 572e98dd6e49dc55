"""The HTML report: which attention variant to use, and what it costs.

:func:`build_report` reads every variant's result documents (``attnbench.train/1``
metrics.json with its ``steps.csv`` and ``power_train.csv`` sidecars, ``attnbench.probe/1``
probe.json, ``attnbench.sweep/1`` sweep.json; one train and probe document per seed) plus the
tokenizer's ``stats.json`` and writes into ``out_dir``:

* ``index.html`` -- one self-contained page (inline CSS, inline SVG plots, one tiny inline
  sorting script allowed by a hash in the page's Content-Security-Policy; no network): the
  verdict first (which variant by sequence length and by constraint, with intervals, ties and
  suspect rows), then failures and unavailable metrics (collapsed, one line per reason), the
  summary table, findings, plots, the run and one provenance row per document;
* ``results.csv`` -- one row per variant, flat columns, empty cell = not measured;
* ``results.json`` -- the run header, the verdict, every document as read, the summary values,
  the failures, the unavailable notes and the provenance rows;
* ``runs.csv`` / ``summary.csv`` -- tidy per-seed values and their means with 95 % intervals.

Rules the page keeps: a metric that was not measured is ``null`` in the documents and is
shown as "—" with the reason in a tooltip, never as 0; a plot without data says "not
measured: <reason>"; failed variants stay in the table and are listed with their reason; an
order is claimed only where intervals separate (or paired per-seed differences exclude 0); every string from a document is HTML-escaped
(Jinja2 autoescape; matplotlib escapes the text it writes into SVG) and a raw Python object
repr in it is reduced to its class name (:func:`.format.clean`).

The package: :mod:`.load` reads the documents, :mod:`.format` formats numbers and units,
:mod:`.table` builds the summary table and CSV rows, :mod:`.cache` the cache sizes at stated
lengths, :mod:`.verdict` the recommendation, :mod:`.provenance` the per-document provenance
and GPU-sharing check, :mod:`.charts` and :mod:`.plots` the figures (matplotlib, inline SVG),
:mod:`.findings` the header, notes, failures and findings, :mod:`.tidy` the tidy CSVs,
:mod:`.agreement` the exact-agreement check, and :mod:`.build` renders and writes the files.
"""

from .build import build_report
from .plots import pareto_front

__all__ = ["build_report", "pareto_front"]
