#!/usr/bin/env bash
# A single-node Slurm on this machine for the tests (real slurmctld, slurmd and munge; no
# accounting): `scripts/slurm-up.sh start DIR` installs them when missing (Debian, as
# root), writes DIR/slurm.conf for this machine's CPUs and memory (`slurmd -C`), starts the
# daemons in the foreground in the background, waits until `sinfo` shows the node idle and
# writes their PIDs to DIR/pids; `scripts/slurm-up.sh stop DIR` stops those PIDs. Export
# SLURM_CONF=DIR/slurm.conf to use it. Exits 3 with one line saying why when Slurm cannot
# be started here (not root, no apt-get, a daemon that does not come up).
set -uo pipefail
cmd="${1:-}"
dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

if [ "$cmd" = stop ]; then
    [ -f "$dir/pids" ] || exit 0
    # Only the daemons this script started, by their PIDs.
    while read -r pid; do
        kill "$pid" 2>/dev/null || true
    done < "$dir/pids"
    sleep 1
    while read -r pid; do
        kill -9 "$pid" 2>/dev/null || true
    done < "$dir/pids"
    rm -f "$dir/pids"
    exit 0
fi

skip() { echo "Slurm not started: $*" >&2; exit 3; }
[ "$(id -u)" = 0 ] || skip "not root (the daemons need it)"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || skip "slurmctld/slurmd/munge are not installed and there is no apt-get"
    # A fresh machine may have no package lists yet: update them once and try again.
    install() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            slurmctld slurmd slurm-client munge >>"$dir.apt.log" 2>&1
    }
    install || { apt-get update -qq >>"$dir.apt.log" 2>&1 && install; } \
        || skip "apt-get install slurmctld slurmd slurm-client munge failed (see $dir.apt.log)"
fi
mkdir -p "$dir/state" "$dir/spool"
: > "$dir/pids"
host="$(hostname -s)"
node="$(slurmd -C | head -1)"
cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node")"
mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")"
[ -n "$cpus" ] && [ -n "$mem" ] || skip "slurmd -C did not describe this machine: $node"
cat > "$dir/slurm.conf" <<CONF
ClusterName=dcsearch
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MpiDefault=none
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"

# munge: one that already runs is used; else one started here.
if ! munge -n </dev/null >/dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge 2>/dev/null || true
    if [ ! -s /etc/munge/munge.key ]; then
        (command -v mungekey >/dev/null && mungekey --create) || skip "no /etc/munge/munge.key"
        chown munge:munge /etc/munge/munge.key
    fi
    # setpriv executes munged itself, so $! is munged's PID (stopped by it at the end).
    setpriv --reuid=munge --regid=munge --init-groups munged -F >"$dir/munged.log" 2>&1 &
    echo $! >> "$dir/pids"
    for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n </dev/null >/dev/null 2>&1 || skip "munged did not start ($dir/munged.log)"
fi
slurmctld -D -i >"$dir/slurmctld.out" 2>&1 &
echo $! >> "$dir/pids"
slurmd -D >"$dir/slurmd.out" 2>&1 &
echo $! >> "$dir/pids"
for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
        echo "Slurm up: node $host idle ($cpus CPUs, $mem MB), SLURM_CONF=$SLURM_CONF" >&2
        exit 0
    fi
    sleep 0.5
done
"$0" stop "$dir"
skip "the node did not become idle within 30 s (logs in $dir)"
