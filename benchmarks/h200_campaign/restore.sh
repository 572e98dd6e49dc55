# Put an earlier session's documents (pack.tgz: results/, logs/) beside this session's tokens:
# whole units only (a training with its probe -- weights do not travel --, a sweep), the tokens
# checked equal, every file stamped one time later than the tokens so Snakemake keeps them.
set -e
. "$(dirname "$0")/env.sh"
unpacked=$(mktemp -d)
tar xzf "$1" -C "$unpacked"
cd "$unpacked"
CAMP=$CAMP python3 - <<'PY'
import json, os, pathlib, shutil
old = json.load(open("results/tokens/stats.json"))
new = json.load(open(pathlib.Path(os.environ["CAMP"], "results/tokens/stats.json")))
assert all(old.get(k) == new[k] for k in new if "sha" in k), "the tokens differ from the earlier session's"
kept = 0
for m in list(pathlib.Path("results/train").rglob("metrics.json")):
    probe = pathlib.Path("results/probe", *m.parent.parts[2:], "probe.json")
    if probe.exists():
        kept += 1
    else:
        shutil.rmtree(m.parent); print("dropped (no probe):", m.parent)
for stage, doc in (("train", "metrics.json"), ("probe", "probe.json"), ("sweep", "sweep.json")):
    for d in sorted(pathlib.Path("results", stage).rglob("*"), reverse=True):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
        elif d.is_dir() and any(f.is_file() for f in d.iterdir()) and not (d / doc).exists():
            shutil.rmtree(d); print("dropped (unfinished):", d)
shutil.rmtree("results/report", ignore_errors=True); shutil.rmtree("results/tokens", ignore_errors=True)
print("restored: trainings with probes", kept, "sweeps", len(list(pathlib.Path("results/sweep").rglob("sweep.json"))))
PY
T=$(( $(date +%s) + 2 ))
cp -a results/. "$CAMP/results/"
if [ -d logs ]; then mkdir -p "$CAMP/logs" && cp -an logs/. "$CAMP/logs/"; fi
cd "$CAMP" && rm -rf "$unpacked"
find results -path results/tokens -prune -o -type f -print0 | xargs -0 touch -d "@$T"
