"""The HTML report: which attention variant to use, and what it costs.

:func:`build_report` reads every variant's result documents (``attnbench.train/1``
metrics.json with its ``steps.csv`` and ``power_train.csv`` sidecars, ``attnbench.probe/1``
probe.json, ``attnbench.sweep/1`` sweep.json) plus the tokenizer's ``stats.json`` and writes
three files into ``out_dir``:

* ``index.html`` -- one self-contained page (inline CSS, inline SVG plots, one tiny inline
  sorting script allowed by a hash in the page's Content-Security-Policy; no network);
* ``results.csv`` -- tidy: one row per variant, flat columns, empty cell = not measured;
* ``results.json`` -- the run header, every document as read, the summary values, the
  failures and the unavailable notes.

Rules the page keeps: a metric that was not measured is ``null`` in the documents and is
shown as "—" with the reason in a tooltip, never as 0; a plot without data says "not
measured: <reason>"; failed variants stay in the table and are listed with their reason;
every string from a document is HTML-escaped (Jinja2 autoescape, and :func:`.format._e` inside the
hand-written SVG).

The package: :mod:`.load` reads the documents, :mod:`.format` formats numbers and units,
:mod:`.table` builds the summary table and CSV rows, :mod:`.plots` draws the SVG figures,
:mod:`.findings` writes the header, notes, failures and findings, and :mod:`.build` renders
and writes the three files.
"""

from .build import build_report
from .plots import pareto_front

__all__ = ["build_report", "pareto_front"]
