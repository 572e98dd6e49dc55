#!/usr/bin/env bash
# Stand up a real single-node SLURM *with accounting* on this (Debian, root) machine,
# for tests/cluster/test_slurm.py.  Follows ../shared/notes/slurm-local.md (beside the project root).
#
#   bash tests/cluster/slurm_up.sh      # idempotent: re-running keeps what is already up
#   bash tests/cluster/slurm_down.sh    # stops exactly the daemons this script started
#
# Daemons (each in the foreground under setsid, so $! is the daemon's own PID):
#   munged (as user munge) -> mariadbd -> slurmdbd -> slurmctld -> slurmd
# Every PID this script starts is appended to $ATTNBENCH_SLURM_STATE/pids ("name pid").
# Logs: $ATTNBENCH_SLURM_STATE/log/<name>.log.
#
# Exit codes: 0 up (sinfo shows the node idle), 2 not root, 3 packages missing and
# not installable (the pytest fixture turns that into a loud skip), 1 anything else.
set -euo pipefail

STATE=${ATTNBENCH_SLURM_STATE:-/var/lib/attnbench-slurm}
PIDS=$STATE/pids
LOG=$STATE/log
CLUSTER=local
PARTITION=${ATTNBENCH_SLURM_TEST_PARTITION:-debug}
DB_PASS=attnbench-slurmdbd          # local test DB only; MariaDB listens on 127.0.0.1
PKGS=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
WAIT=${ATTNBENCH_SLURM_WAIT:-90}    # bound (seconds) for each readiness wait
# The node advertises this many *fake* GPUs (gres type "fake", File=/dev/null): a job with
# --gpus=1 is accepted, scheduled and accounted (AllocTRES gres/gpu=1), but no CUDA device
# exists -- enough to test the profile's GPU request end to end without a GPU.
FAKE_GPUS=${ATTNBENCH_SLURM_FAKE_GPUS:-1}

say() { echo "[slurm_up] $*" >&2; }
die() { say "ERROR: $*"; exit "${2:-1}"; }

[ "$(id -u)" = 0 ] || die "must run as root (starts system daemons)" 2

# ---------------------------------------------------------------- packages ----
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d (if present) keeps apt from starting the services; we start them below.
    mkdir -p "$LOG"
    apt_log=$LOG/apt.log
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$apt_log" 2>&1; then
        apt-get update -qq >>"$apt_log" 2>&1 || true
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$apt_log" 2>&1 \
            || die "apt-get install ${missing[*]} failed (see $apt_log)" 3
    fi
fi
for b in munged mariadbd slurmdbd slurmctld slurmd sacctmgr sinfo sbatch sacct setpriv; do
    command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || die "$b not found after install" 3
done
export PATH=$PATH:/usr/sbin:/sbin

mkdir -p "$STATE" "$LOG" "$STATE/ctld" "$STATE/d"
touch "$PIDS"

# ------------------------------------------------------------- helpers ----
pid_of() { awk -v n="$1" '$1==n {p=$2} END {print p}' "$PIDS"; }
ours_alive() {                              # our recorded PID for $1 is alive (and is that program)
    local pid; pid=$(pid_of "$1")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q "$2" "/proc/$pid/cmdline" 2>/dev/null
}
record() {                                  # record name pid (replacing a stale entry)
    awk -v n="$1" '$1!=n' "$PIDS" >"$PIDS.tmp" || true
    echo "$1 $2" >>"$PIDS.tmp"
    mv "$PIDS.tmp" "$PIDS"
}
start() {                                   # start NAME CMD...: background, own session, logged
    local name=$1; shift
    setsid "$@" >>"$LOG/$name.log" 2>&1 </dev/null &
    record "$name" "$!"
    say "started $name (pid $!)"
}
wait_for() {                                # wait_for DESC NAME CMD...: poll until CMD succeeds
    local desc=$1 name=$2; shift 2
    local t0=$SECONDS
    until "$@" >/dev/null 2>&1; do
        if [ -n "$name" ] && [ -n "$(pid_of "$name")" ] && ! kill -0 "$(pid_of "$name")" 2>/dev/null; then
            tail -n 30 "$LOG/$name.log" >&2 || true
            die "$name died while waiting for: $desc"
        fi
        if (( SECONDS - t0 > WAIT )); then
            [ -n "$name" ] && { tail -n 30 "$LOG/$name.log" >&2 || true; }
            die "timed out after ${WAIT}s waiting for: $desc"
        fi
        sleep 1
    done
    say "ready: $desc ($((SECONDS - t0))s)"
}
write_if_changed() {                        # write_if_changed PATH MODE (content on stdin)
    local tmp; tmp=$(mktemp)
    cat >"$tmp"
    if [ -f "$1" ] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; else install -m "$2" "$tmp" "$1"; rm -f "$tmp"; fi
}

HOST=$(hostname -s)
NCPU=$(nproc)
MEM_MB=$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)
MEM_MB=$(( MEM_MB > 1024 ? MEM_MB - 512 : MEM_MB ))   # leave the OS some room

# ---------------------------------------------------------------- munge ----
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge /var/lib/munge /var/log/munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munge already working"
else
    ours_alive munged munged && die "our munged runs but munge -n | unmunge fails"
    start munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
    wait_for "munge credential round-trip" munged sh -c 'munge -n | unmunge'
fi

# -------------------------------------------------------------- mariadb ----
install -d -o mysql -g mysql -m 0755 /run/mysqld
if [ ! -d /var/lib/mysql/mysql ]; then
    say "initialising MariaDB data directory"
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >>"$LOG/mariadb-install.log" 2>&1
fi
if mariadb-admin --silent ping >/dev/null 2>&1; then
    say "MariaDB already answering"
else
    start mariadbd /usr/sbin/mariadbd --user=mysql
    wait_for "MariaDB ping" mariadbd mariadb-admin --silent ping
fi
mariadb -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL

# ------------------------------------------------------------ slurm conf ----
mkdir -p /etc/slurm
write_if_changed /etc/slurm/slurmdbd.conf 600 <<EOF
# Managed by attnbench tests/cluster/slurm_up.sh (single-node test cluster).
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
PidFile=$STATE/slurmdbd.pid
LogFile=$LOG/slurmdbd.daemon.log
DebugLevel=info
EOF
chown root:root /etc/slurm/slurmdbd.conf

write_if_changed /etc/slurm/slurm.conf 644 <<EOF
# Managed by attnbench tests/cluster/slurm_up.sh (single-node test cluster).
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.daemon.log
SlurmdLogFile=$LOG/slurmd.daemon.log
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobCompType=jobcomp/none
AccountingStoreFlags=job_comment
MinJobAge=300
KillWait=5
InactiveLimit=0
Waittime=0
GresTypes=gpu
AccountingStorageTRES=gres/gpu
NodeName=$HOST CPUs=$NCPU RealMemory=$MEM_MB Gres=gpu:fake:$FAKE_GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

write_if_changed /etc/slurm/gres.conf 644 <<EOF
# Managed by attnbench tests/cluster/slurm_up.sh: fake GPUs, no device files.
NodeName=$HOST Name=gpu Type=fake Count=$FAKE_GPUS File=/dev/null
EOF

# ------------------------------------------------------------- slurmdbd ----
if sacctmgr -n list cluster format=cluster >/dev/null 2>&1; then
    say "slurmdbd already answering"
else
    start slurmdbd /usr/sbin/slurmdbd -D
    wait_for "slurmdbd answers sacctmgr" slurmdbd sacctmgr -n list cluster format=cluster
fi
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    say "registered cluster '$CLUSTER' in accounting"
fi

# ------------------------------------------------------ slurmctld/slurmd ----
if scontrol ping 2>/dev/null | grep -q "is UP"; then
    say "slurmctld already up"
else
    start slurmctld /usr/sbin/slurmctld -D
    wait_for "slurmctld UP" slurmctld sh -c 'scontrol ping | grep -q "is UP"'
fi
if ours_alive slurmd slurmd || pgrep -x slurmd >/dev/null; then
    say "slurmd already running"
else
    start slurmd /usr/sbin/slurmd -D
fi
node_ready() {
    local st; st=$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n1)
    case $st in idle|mixed|allocated|completing) return 0 ;; esac
    # a node left down/drained by an earlier run: resume it
    case $st in down*|drain*|*drain) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;; esac
    return 1
}
wait_for "node $HOST idle in partition $PARTITION" slurmd node_ready
sinfo >&2
say "up; PIDs in $PIDS"
