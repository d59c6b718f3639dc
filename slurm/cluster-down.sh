#!/usr/bin/env bash
# Stop the single-node Slurm cluster started by slurm/cluster-up.sh.
#
# Stops slurmd, slurmctld and munged by their PID files (SIGTERM, then SIGKILL
# after CELESTE_SLURM_STOP_WAIT seconds, default 15), waits until each is gone,
# and removes the PID files and the controller/daemon state directories.
# The configuration (/etc/slurm/slurm.conf, the MUNGE key) and the logs in
# /var/log/slurm are kept. Safe to run when nothing is running.
set -euo pipefail

WAIT="${CELESTE_SLURM_STOP_WAIT:-15}"
STATE_DIR=/var/lib/slurm/slurmctld
SPOOL_DIR=/var/lib/slurm/slurmd

say() { echo "cluster-down: $*"; }

[ "$(id -u)" = 0 ] || { echo "cluster-down: error: must run as root" >&2; exit 1; }

# True while the process lives; a zombie (exited, not yet reaped) counts as gone.
running() {
    local pid=$1 state
    [ -r "/proc/$pid/stat" ] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ "$state" != Z ] && [ "$state" != X ]
}

stop() {
    local name=$1 pidfile=$2 pid i
    if [ ! -s "$pidfile" ]; then
        say "$name: no PID file $pidfile (not running)"
        return 0
    fi
    pid=$(cat "$pidfile")
    if ! running "$pid"; then
        say "$name: PID $pid not running; removing stale $pidfile"
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < WAIT * 10; i++)); do
        running "$pid" || break
        sleep 0.1
    done
    if running "$pid"; then
        say "$name: PID $pid ignored SIGTERM for ${WAIT}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            running "$pid" || break
            sleep 0.1
        done
    fi
    if running "$pid"; then
        echo "cluster-down: error: $name (PID $pid) is still running" >&2
        return 1
    fi
    rm -f "$pidfile"
    say "$name stopped (PID $pid)"
}

t0=$(date +%s.%N)
status=0
# Cancel the jobs of this test cluster first, so that no job step outlives slurmd.
if command -v squeue >/dev/null && [ -s /run/slurmctld.pid ] && running "$(cat /run/slurmctld.pid)"; then
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
        say "cancelling jobs: $(echo $jobs)"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
fi
stop slurmd /run/slurmd.pid || status=1
stop slurmctld /run/slurmctld.pid || status=1
stop munged /run/munge/munged.pid || status=1
rm -rf "$STATE_DIR" "$SPOOL_DIR"
t1=$(date +%s.%N)
say "done ($(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s)"
exit $status
