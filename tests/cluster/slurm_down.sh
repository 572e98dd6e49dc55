#!/usr/bin/env bash
# Stop the daemons tests/cluster/slurm_up.sh started, by their recorded PIDs only
# (reverse start order: slurmd, slurmctld, slurmdbd, mariadbd, munged).  Daemons that were
# already running before slurm_up.sh (not in the PID file) are left alone.
#   bash tests/cluster/slurm_down.sh              # all recorded daemons
#   bash tests/cluster/slurm_down.sh slurmd ...   # only these (the pytest fixture stops
#                                                 # just the ones its own slurm_up started)
# Bounded: SIGTERM, wait up to ${ATTNBENCH_SLURM_STOP_WAIT:-20}s each, then SIGKILL.
set -uo pipefail

STATE=${ATTNBENCH_SLURM_STATE:-/var/lib/attnbench-slurm}
PIDS=$STATE/pids
STOP_WAIT=${ATTNBENCH_SLURM_STOP_WAIT:-20}

say() { echo "[slurm_down] $*" >&2; }
[ -f "$PIDS" ] || { say "no PID file $PIDS: nothing to stop"; exit 0; }

for name in slurmd slurmctld slurmdbd mariadbd munged; do
    if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
    pid=$(awk -v n="$name" '$1==n {p=$2} END {print p}' "$PIDS")
    [ -n "$pid" ] || continue
    if kill -0 "$pid" 2>/dev/null && grep -q "$name" "/proc/$pid/cmdline" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq $((STOP_WAIT * 5))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name (pid $pid) ignored SIGTERM for ${STOP_WAIT}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
        say "stopped $name (pid $pid)"
    else
        say "$name (pid $pid) not running"
    fi
    awk -v n="$name" '$1!=n' "$PIDS" >"$PIDS.tmp" && mv "$PIDS.tmp" "$PIDS"
done
exit 0
