"""Here, once a session's documents are committed: render each finished shape's report, and the
scaling page when every shape has one, from the campaign's documents with this checkout's report
code -- the same calls the ``report`` and ``scaling`` rules make, into ``results/report/`` of the
campaign folder.

    .venv/bin/python benchmarks/h200_campaign/render.py reports/h200/campaign-c432349

Why: the report stage runs on the CPU and reads nothing but the documents, so a mend of the
report's checks (the exact-agreement rule of bb7cd88, say) reaches a campaign already run without
re-running one GPU job.  The jobs' commit stays in every document; the report states its own
commit beside it (``header.report_commit``).  A shape is rendered only when every document its
report rule reads is there, and only with the settings its report there was rendered with (the
pipeline's, or an earlier render's; the pipeline's stays in git history): where one shape's
differ, it stops before rendering any, naming the keys.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from attnbench.report import build_report  # noqa: E402
from attnbench.report.readme_sources import Campaign  # noqa: E402
from attnbench.report.scaling import build_scaling  # noqa: E402
from attnbench.results import git_commit  # noqa: E402
from attnbench.settings import report_settings, shape_size  # noqa: E402


def inputs(camp: Campaign, shape: str) -> tuple[dict[str, list[Path]], list[str]]:
    """The documents the report rule of ``shape`` reads (rules/common.smk, shape_docs: seed-major,
    variants in config order), and those missing."""
    config, res = camp.config, camp.dir / "results"
    seeds = config.get("seeds") or [config["seed"]]
    docs = {
        "train": [res / "train" / shape / v / f"seed{s}" / "metrics.json" for s in seeds for v in config["variants"]],
        "probe": [res / "probe" / shape / v / f"seed{s}" / "probe.json" for s in seeds for v in config["variants"]],
        "sweep": [res / "sweep" / shape_size(config, shape) / v / "sweep.json" for v in config["variants"]],
    }
    missing = [str(p.relative_to(camp.dir)) for ps in docs.values() for p in ps if not p.is_file()]
    return docs, missing


def code_commit() -> str:
    """HEAD of this checkout, ``-dirty`` only when the report's own code or templates changed (the
    renders below change tracked result files, which say nothing of the code)."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return git_commit() or "unknown"  # a copy without .git names its commit otherwise
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "attnbench", "reports/templates", "scripts")
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def settings_differ(earlier_render: Path, settings: dict) -> list[str]:
    """Keys of the report settings in which the render already there differs from ours."""
    if not earlier_render.is_file():
        return []
    theirs = json.loads(earlier_render.read_text())["config"]
    return sorted(k for k in set(theirs) | set(settings) if theirs.get(k) != settings.get(k))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("campaign", type=Path, help="the campaign folder (config.yaml, results/)")
    args = ap.parse_args()
    camp = Campaign(args.campaign)
    stats = camp.dir / "results" / "tokens" / "stats.json"
    if not stats.is_file():
        print(f"error: no {stats.relative_to(camp.dir)}: the data stage's statistics every report reads", file=sys.stderr)
        return 1
    os.environ["ATTNBENCH_GIT_COMMIT"] = code_commit()  # what header.report_commit states
    ready = {}
    for shape in camp.planned:
        docs, missing = inputs(camp, shape)
        if missing:
            print(f"{shape}: not rendered, {len(missing)} documents missing (first: {missing[0]})")
            continue
        settings = report_settings(camp.config, shape)
        differ = settings_differ(camp.dir / "results" / "report" / shape / "results.json", settings)
        if differ:
            print(f"error: {shape}: its report there was rendered with other settings ({', '.join(differ)}); "
                  "nothing rendered", file=sys.stderr)
            return 1
        ready[shape] = (docs, settings)
    rendered = []
    for shape, (docs, settings) in ready.items():
        out = camp.dir / "results" / "report" / shape
        build_report(train=docs["train"], probe=docs["probe"], sweep=docs["sweep"], stats=stats, config=settings,
                     out_dir=out)
        rendered.append(shape)
        print(f"{shape}: rendered to {out.relative_to(camp.dir)}/index.html")
    if rendered and rendered == camp.planned:
        out = camp.dir / "results" / "report"
        build_scaling(rendered, [out / s / "summary.csv" for s in rendered], [out / s / "results.json" for s in rendered],
                      out)
        print(f"scaling page: {out.relative_to(camp.dir)}/index.html")
    else:
        print("scaling page: not rendered (not every shape has its report)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
