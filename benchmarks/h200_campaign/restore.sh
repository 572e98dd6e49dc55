# Put an earlier session's documents (pack.tgz: results/, logs/) beside this session's tokens:
# whole units only (a training with its probe -- weights do not travel --, a sweep), the tokens
# checked equal, every file stamped one time later than the tokens so Snakemake keeps them.
set -e
cd /tmp/camp
rm -rf /tmp/restore && mkdir -p /tmp/restore && tar xzf "$1" -C /tmp/restore
cd /tmp/restore
python3 - <<'PY'
import json, pathlib, shutil
old = json.load(open("results/tokens/stats.json")); new = json.load(open("/tmp/camp/results/tokens/stats.json"))
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
cp -a results/. /tmp/camp/results/
if [ -d logs ]; then mkdir -p /tmp/camp/logs && cp -an logs/. /tmp/camp/logs/; fi
cd /tmp/camp && find results -path results/tokens -prune -o -type f -print0 | xargs -0 touch -d "@$T"
