"""Reading the result documents: one :class:`Variant` per trained variant with one
:class:`Run` per seed (its train and probe :class:`Doc`), its sweep :class:`Doc`, and the
reason text for whatever is missing, failed or null.

``Variant.train`` / ``Variant.probe`` are the documents of its first finished seed (the one
the plots draw); the table shows means over all seeds with their intervals (``table.py``)."""

from __future__ import annotations

import csv
import json
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from .format import _num, clean, dig

if TYPE_CHECKING:  # table.py imports this module, so Cell only for the annotation
    from .table import Cell

BASELINE = "baseline"  # the variant every other one is compared with
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#79706e")
DASHES = (None, "6 3", "2 2", "8 3 2 3")


def _read_json(path: Path | None, kind: str) -> tuple[dict | None, str | None]:
    if path is None:
        return None, f"no {kind} result document"
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{kind} result {path} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{kind} result {path} is unreadable: {err}"
    if not isinstance(doc, dict):
        return None, f"{kind} result {path} is not a JSON object"
    return doc, None


def _read_csv(path: Path) -> tuple[list[dict[str, str]] | None, str | None]:
    if not path.exists():
        return None, f"{path.name} was not written"
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        return None, f"{path.name} is unreadable: {err}"
    return rows, None


def _unavailable_map(doc: dict | None) -> dict[str, str]:
    """The document's ``unavailable`` plus any nested ``<section>.unavailable`` maps."""
    out: dict[str, str] = {}
    if not isinstance(doc, dict):
        return out
    for key, val in doc.items():
        if isinstance(val, dict) and isinstance(val.get("unavailable"), dict):
            for k, reason in val["unavailable"].items():
                out[k if "." in k else f"{key}.{k}"] = clean(reason)
        elif isinstance(val, dict) and isinstance(val.get("unavailable"), str):
            # one reason for the whole section (efficiency: "no finite losses or no energy"): its null figures
            for k, x in val.items():
                if k != "unavailable" and x is None:
                    out[f"{key}.{k}"] = clean(val["unavailable"])
    if isinstance(doc.get("unavailable"), dict):
        out.update({str(k): clean(v) for k, v in doc["unavailable"].items()})
    return out


def _failure_text(failure: Any) -> str:
    if not isinstance(failure, dict):
        return clean(failure) if failure else "no reason recorded"
    kind = failure.get("kind") or "error"
    step = failure.get("step")
    message = clean(failure.get("message") or "no message")
    where = f" at step {step}" if step is not None and f"step {step}" not in message else ""
    return f"{kind}{where}: {message}"


@dataclass
class Doc:
    """One result document of one variant (train, probe or sweep)."""

    kind: str
    path: Path | None
    data: dict | None
    missing: str | None = None  # why there is no document

    @property
    def status(self) -> str:
        if self.data is None:
            return "missing"
        return str(self.data.get("status") or "ok")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def unavailable(self) -> dict[str, str]:
        return _unavailable_map(self.data)

    def not_ok_reason(self) -> str | None:
        if self.data is None:
            return self.missing
        st = self.status
        if st == "ok":
            return None
        if st == "skipped":
            return f"{self.kind} skipped: " + clean(self.data.get("reason") or self.unavailable.get(self.kind)
                                                    or "no reason recorded")
        return f"{self.kind} {st}: " + _failure_text(self.data.get("failure"))

    def get(self, dotted: str) -> tuple[Any, str | None]:
        """``(value, None)`` or ``(None, reason)``; the reason comes from ``unavailable``
        (the key itself or a parent), else from the document's status, else says so."""
        value = dig(self.data, dotted) if self.data is not None else None
        if value is not None:
            return value, None
        return None, self.reason(dotted)

    def reason(self, dotted: str) -> str:
        unav = self.unavailable
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            k = ".".join(parts[:i])
            if k in unav:
                return unav[k]
        bad = self.not_ok_reason()
        if bad:
            return bad
        name = self.path.name if self.path else f"{self.kind} result"
        parent, _, leaf = dotted.rpartition(".")
        holder = dig(self.data, parent) if parent else self.data
        if isinstance(holder, dict) and leaf not in holder or parent and not isinstance(holder, dict):
            return f"{name} has no {dotted} (the code that wrote it did not record this metric)"
        return f"null in {name} with no reason recorded"


@dataclass
class Run:
    """One seed of one variant: its training and probe documents."""

    seed: int | None
    train: Doc
    probe: Doc
    stale: str | None = None  # why this run does not belong in this report (stale.py)


@dataclass
class Variant:
    name: str
    index: int
    color: str
    dash: str | None
    train: Doc
    probe: Doc
    sweep: Doc
    runs: list[Run] = field(default_factory=list)
    steps: list[dict[str, str]] | None = None
    steps_reason: str | None = None
    power: list[dict[str, str]] | None = None
    power_reason: str | None = None
    cells: dict[str, "Cell"] = field(default_factory=dict)
    agreement: dict | None = None  # exact variants: their loss curve against baseline's (agreement.py)

    @property
    def ok(self) -> bool:
        return self.train.ok and any(not r.stale for r in self.runs)

    @property
    def ok_runs(self) -> list[Run]:
        """Finished runs that belong in this report (stale ones are listed, not used)."""
        return [r for r in self.runs if r.train.ok and not r.stale]

    @property
    def status_label(self) -> str:
        return "stale" if self.train.ok and not self.ok else self.train.status

    def view(self, run: Run) -> "Variant":
        """This variant as seen through one run's documents (for per-seed values)."""
        return Variant(name=self.name, index=self.index, color=self.color, dash=self.dash, train=run.train,
                       probe=run.probe, sweep=self.sweep, runs=[run])

    @property
    def exact(self) -> bool:
        """Computes baseline's function (``attention.exact``); other variants approximate it."""
        return bool(dig(self.train.data, "attention.exact")) or self.name == BASELINE

    @property
    def suspect(self) -> bool:
        return bool(self.agreement and self.agreement.get("suspect"))

    @property
    def params(self) -> dict:
        p = dig(self.train.data, "attention.params")
        if not isinstance(p, dict):
            p = {}
        return p

    @property
    def params_text(self) -> str:
        return ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in self.params.items())


def _seed(doc: Doc) -> int | None:
    seed = dig(doc.data, "provenance.seed")
    return seed if isinstance(seed, int) else None


def _name(doc: Doc) -> str:
    return str(doc.data.get("variant")) if doc.data and doc.data.get("variant") else _folder_name(doc.path)


def _folder_name(path: Path | None) -> str:
    """The variant folder of ``results/<stage>/<variant>[/seed<n>]/<file>``."""
    if path is None:
        return "?"
    parent = path.parent
    return parent.parent.name if parent.name.startswith("seed") else parent.name


def load_variants(train: Sequence, probe: Sequence, sweep: Sequence,
                  stale: Callable[[str, Run], str | None] | None = None) -> list[Variant]:
    """Group the documents by variant (first appearance in ``train`` = config order) and seed."""
    def read(paths: Sequence, kind: str) -> list[Doc]:
        docs = []
        for p in paths:
            data, why = _read_json(Path(p), kind)
            docs.append(Doc(kind, Path(p), data, why))
        return docs

    runs: "OrderedDict[str, list[Run]]" = OrderedDict()
    probes = {(_name(d), _seed(d)): d for d in read(probe, "probe")}
    sweeps = {_name(d): d for d in read(sweep, "sweep")}
    for doc in read(train, "train"):
        name, seed = _name(doc), _seed(doc)
        pr = probes.get((name, seed)) or Doc("probe", None, None, "no probe result document for this run")
        run = Run(seed, doc, pr)
        run.stale = stale(name, run) if stale is not None else None
        runs.setdefault(name, []).append(run)
    variants = []
    for i, (name, rs) in enumerate(runs.items()):
        first = next((r for r in rs if r.train.ok and not r.stale), next((r for r in rs if r.train.ok), rs[0]))
        v = Variant(name=name, index=i, color=PALETTE[i % len(PALETTE)],
                    dash=DASHES[(i // len(PALETTE)) % len(DASHES)], train=first.train, probe=first.probe,
                    sweep=sweeps.get(name) or Doc("sweep", None, None, "no sweep result document"),
                    runs=rs)
        doc = first.train
        folder = doc.path.parent
        if doc.ok:
            v.steps, v.steps_reason = _read_csv(folder / "steps.csv")
        else:
            v.steps_reason = doc.not_ok_reason()
        v.power, v.power_reason = _read_csv(folder / "power_train.csv")
        if v.power is not None and not v.power:
            v.power, v.power_reason = None, None
        if v.power is None:
            v.power_reason = (doc.unavailable.get("energy.gpu_mean_w") or doc.unavailable.get("energy.gpu_j_total")
                              or (doc.not_ok_reason() if not doc.ok else None) or v.power_reason
                              or "power_train.csv has no samples")
        variants.append(v)
    return variants


# Here rather than in plots.py or findings.py because both use them.
def _common_reason(reasons: Iterable[str | None | tuple[str, str | None]]) -> str:
    """One line saying why something has no data: the most common reason, then any other
    reason with the variants it applies to (items are reasons or ``(variant, reason)``)."""
    pairs = [(r if isinstance(r, tuple) else ("", r)) for r in reasons]
    pairs = [(n, r) for n, r in pairs if r]
    if not pairs:
        return "no data"
    top = Counter(r for _, r in pairs).most_common(1)[0][0]
    others: "OrderedDict[str, list[str]]" = OrderedDict()
    for n, r in pairs:
        if r != top:
            others.setdefault(r, []).append(n)
    parts = [top]
    for r, names in others.items():
        who = ", ".join(n for n in names if n)
        parts.append(f"{who}: {r}" if who else r)
    return "; ".join(parts)


def _steps_points(v: Variant) -> list[tuple[float, float]]:
    """``(step, loss)`` from the variant's steps.csv, rows without both skipped."""
    return loss_points(v.steps)


def loss_points(rows: list[dict] | None) -> list[tuple[float, float]]:
    """``(step, loss)`` of steps.csv rows, rows without both skipped."""
    pts = []
    for r in rows or []:
        s, loss = _num(r.get("step")), _num(r.get("loss"))
        if s is not None and loss is not None:
            pts.append((s, loss))
    return pts
