"""Render the tables and figures of the committed reports' READMEs from their documents.

A README keeps its prose by hand and every measured figure between marker comments::

    <!-- generated: NAME (scripts/readme_tables.py) -->
    ...rendered markdown...
    <!-- end generated: NAME -->

``python scripts/readme_tables.py`` rewrites every fragment from the committed documents;
``--check`` changes nothing and exits 1 naming the fragments that differ (what
``tests/test_readme_tables.py`` runs).  Prose outside the markers holds no measured figure,
so nothing in a README can drift from the files beside it.  The renderers for each README
are in :data:`READMES`; each reads only files under that README's folder.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .format import _sig as sig  # three significant digits, as the report's tables print them
from .format import dig
from .provenance import short_commit

ROOT = Path(__file__).resolve().parents[2]
BEGIN = "<!-- generated: {name} (scripts/readme_tables.py) -->"
END = "<!-- end generated: {name} -->"
BLOCK = re.compile(r"<!-- generated: (\S+) \(scripts/readme_tables\.py\) -->\n(.*?)<!-- end generated: \1 -->",
                   re.S)
H100_ORDER = ("baseline", "sdpa", "flash2", "gqa", "flex", "sliding_window", "linear", "lsh", "mla")


# --- reading and formatting -------------------------------------------------------------------

def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def kilo(x: float) -> str:
    """Tokens per second in thousands: 413,513 -> 414k."""
    return f"{x / 1000:,.0f}k" if x >= 100_000 else f"{sig(x / 1000)}k"


def mib(x: float) -> str:
    return f"{sig(x / 2**20)} MiB"


def gib(x: float) -> str:
    return sig(x / 2**30)


def pct(x: float) -> str:
    """A share as the tables print it: 0.044 -> 4 %."""
    return f"{100 * x:.0f} %"


def span(xs, fmt: str = ".1e") -> str:
    """"a–b" over the values, or the one value when both ends print alike."""
    lo, hi = format(min(xs), fmt), format(max(xs), fmt)
    return lo if lo == hi else f"{lo}–{hi}"


def seq(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 else str(n)


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def commit(doc: dict) -> str:
    c = dig(doc, "provenance.git_commit")
    return f"`{short_commit(c)}`" if c else "unknown (null)"


def names(items) -> str:
    items = [f"`{x}`" for x in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else "none"


def render(readme: str) -> dict[str, str]:
    from .readme_sources import READMES

    cls, fragments = READMES[readme]
    source = cls((ROOT / readme).parent)
    return {name: fn(source).strip() + "\n" for name, fn in fragments.items()}


def rewrite(text: str, fragments: dict[str, str]) -> tuple[str, list[str]]:
    """``text`` with every fragment replaced; also the names missing from it or unknown in it."""
    found = BLOCK.findall(text)
    problems = [f"no markers for fragment {n!r}" for n in fragments if n not in {f for f, _ in found}]
    problems += [f"markers for unknown fragment {n!r}" for n, _ in found if n not in fragments]
    out = BLOCK.sub(lambda m: (BEGIN.format(name=m.group(1)) + "\n" + fragments.get(m.group(1), m.group(2))
                               + END.format(name=m.group(1))), text)
    return out, problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a fragment differs")
    args = ap.parse_args(argv)
    from .readme_sources import READMES

    stale = []
    for readme in READMES:
        path = ROOT / readme
        text = path.read_text(encoding="utf-8")
        new, problems = rewrite(text, render(readme))
        if problems:
            print(f"{readme}: " + "; ".join(problems), file=sys.stderr)
            return 1
        if new != text:
            stale.append(readme)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if stale:
        print(("out of date: " if args.check else "rewrote: ") + ", ".join(stale), file=sys.stderr)
    return 1 if stale and args.check else 0
