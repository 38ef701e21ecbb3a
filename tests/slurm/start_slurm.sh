#!/usr/bin/env bash
# A single-node SLURM on this machine (munged, slurmctld and slurmd on localhost) for tests/test_slurm.py.
#   bash tests/slurm/start_slurm.sh
# Idempotent: installs Debian's slurm-wlm and munge only when missing, writes /etc/slurm/slurm.conf for this host
# (all its CPUs, one partition "debug"), starts only the daemons that are not running, and returns once `sinfo`
# shows the node idle. Needs root and a Debian-like system with apt-get.
# Exit codes: 0 SLURM is up; 3 this machine cannot host it (not root, no apt-get, packages unreachable): the
# test skips with the message; anything else is a real failure (the daemons' log tails are printed).
set -euo pipefail

cannot() { echo "start_slurm.sh: $*" >&2; exit 3; }
fail() {
    echo "start_slurm.sh: $*" >&2
    for log in /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log; do
        [ -f "$log" ] && { echo "--- tail $log" >&2; tail -n 20 "$log" >&2; }
    done
    exit 1
}
node_state() { sinfo -h -n "$host" -o %T 2>/dev/null | head -n1 || true; }

host=$(hostname -s)
# Every CPU this process may use (GNU nproc would otherwise answer OMP_NUM_THREADS), memory as the kernel reports.
cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
memory_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 * 9 / 10))
conf="# Written by ftkit's tests/slurm/start_slurm.sh: a single-node SLURM on $host.
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
MailProg=/bin/true
NodeName=$host CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP"

if command -v sinfo >/dev/null && [[ "$(node_state)" =~ ^(idle|mixed|allocated) ]] \
    && [ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" = "$conf" ]; then
    echo "start_slurm.sh: SLURM is already up ($host $(node_state), $cpus CPUs)"
    exit 0
fi
[ "$(id -u)" = 0 ] || cannot "needs root to install and start SLURM (running as $(id -un))"

# 1. Packages: slurm-wlm (slurmctld, slurmd, client tools) and munge (its authentication).
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || cannot "slurm-wlm is not installed and there is no apt-get to install it"
    export DEBIAN_FRONTEND=noninteractive
    install=(apt-get install -y -q --no-install-recommends slurm-wlm munge)
    echo "start_slurm.sh: installing slurm-wlm and munge with apt-get"
    if ! "${install[@]}" >/tmp/start_slurm.apt.log 2>&1; then
        apt-get update -q >>/tmp/start_slurm.apt.log 2>&1 || cannot "apt-get update failed (is the Debian registry \
reachable?): $(grep -E '^(E|W):' /tmp/start_slurm.apt.log | tail -n 3 | tr '\n' ' ')"
        "${install[@]}" >>/tmp/start_slurm.apt.log 2>&1 || cannot "apt-get install slurm-wlm munge failed: \
$(grep -E '^E:' /tmp/start_slurm.apt.log | tail -n 3 | tr '\n' ' ')"
    fi
fi

# 2. The host name must resolve: slurmd finds its node by it, and jobs take MASTER_ADDR from it.
getent hosts "$host" >/dev/null || echo "127.0.1.1 $host" >>/etc/hosts

# 3. munge: a key (the package usually creates one), then the daemon.
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
if ! munge -n >/dev/null 2>&1; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged --force || fail "munged did not start"
    for _ in $(seq 20); do munge -n >/dev/null 2>&1 && break; sleep 0.5; done
    munge -n >/dev/null 2>&1 || fail "munged started but munge -n cannot get a credential"
fi

# 4. slurm.conf for this one host (above); daemons running with another one are stopped, to start with this one.
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" != "$conf" ]; then
    for pidfile in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid; do
        if running "$pidfile"; then
            pid=$(cat "$pidfile")
            kill "$pid"
            for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        fi
    done
    printf '%s\n' "$conf" >/etc/slurm/slurm.conf
fi

# 5. The daemons, each only when it is not running (-c: start clean, no saved jobs from an earlier start).
running /run/slurm/slurmctld.pid || /usr/sbin/slurmctld -c || fail "slurmctld did not start"
for _ in $(seq 30); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
running /run/slurm/slurmd.pid || /usr/sbin/slurmd || fail "slurmd did not start"

# 6. Wait for the node; a node left down or drained by an earlier start is resumed.
for i in $(seq 60); do
    state=$(node_state)
    [[ "$state" =~ ^(idle|mixed|allocated) ]] && { echo "start_slurm.sh: SLURM is up ($host $state)"; exit 0; }
    [[ "$state" =~ ^(down|drain) ]] && [ $((i % 5)) = 0 ] && scontrol update nodename="$host" state=resume || true
    sleep 1
done
fail "the node $host did not become idle within 60 s (sinfo says: ${state:-nothing})"
