#!/usr/bin/env bash
# Bring up a single-node Slurm cluster on localhost, without systemd.
#
# Installs Debian's Slurm 22.05 and MUNGE packages if they are missing, makes a
# MUNGE key if there is none, starts munged, writes /etc/slurm/slurm.conf,
# starts slurmctld and slurmd, and waits until the node "localhost" is idle.
# Running it again while the cluster is up only reports that it is up.
#
# Must run as root (CI containers, a throw-away VM). Settings, from the
# environment:
#   CELESTE_SLURM_CPUS     CPUs declared for the node (default 4; more than the
#                          machine has is allowed, so `srun -n 3` runs on 2 cores)
#   CELESTE_SLURM_MEM_MB   RealMemory of the node in MB (default: 90% of MemTotal)
#   CELESTE_SLURM_TIMEOUT  seconds to wait for the node to become idle (default 60)
#   CELESTE_SLURM_FORCE=1  overwrite a slurm.conf that this script did not write
#
# Usage: sudo slurm/cluster-up.sh ; stop with slurm/cluster-down.sh
set -euo pipefail

CPUS="${CELESTE_SLURM_CPUS:-4}"
TIMEOUT="${CELESTE_SLURM_TIMEOUT:-60}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
MARKER="# written by celeste slurm/cluster-up.sh"
STATE_DIR=/var/lib/slurm/slurmctld
SPOOL_DIR=/var/lib/slurm/slurmd
LOG_DIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid

say() { echo "cluster-up: $*"; }
die() { echo "cluster-up: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"
[[ "$CPUS" =~ ^[1-9][0-9]*$ ]] || die "CELESTE_SLURM_CPUS must be a positive integer, got '$CPUS'"
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "CELESTE_SLURM_TIMEOUT must be a positive integer, got '$TIMEOUT'"
if [ -n "${CELESTE_SLURM_MEM_MB:-}" ] && ! [[ "$CELESTE_SLURM_MEM_MB" =~ ^[1-9][0-9]*$ ]]; then
    die "CELESTE_SLURM_MEM_MB must be a positive integer (MB), got '$CELESTE_SLURM_MEM_MB'"
fi

# A PID file names a live process (zombies do not count).
alive() {
    local pidfile=$1 pid state
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    [ -r "/proc/$pid/stat" ] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ "$state" != Z ] && [ "$state" != X ]
}

node_state() {
    sinfo -h -n localhost -o %T 2>/dev/null | head -n 1 | tr -d '*~#!%$@^-'
}

dump_logs() {
    local f
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" /var/log/munge/munged.log; do
        if [ -f "$f" ]; then
            echo "===== tail of $f =====" >&2
            tail -n 40 "$f" >&2
        fi
    done
}

# --- already up? -----------------------------------------------------------
if command -v sinfo >/dev/null && alive "$CTLD_PID" && alive "$SLURMD_PID"; then
    st=$(node_state || true)
    case "$st" in
        idle|mixed|allocated|completing)
            say "already up (node localhost is $st); nothing to do"
            exit 0 ;;
    esac
fi

t0=$(date +%s.%N)

# --- packages --------------------------------------------------------------
need=()
command -v slurmctld >/dev/null || need+=(slurmctld)
command -v slurmd >/dev/null || need+=(slurmd)
command -v sinfo >/dev/null || need+=(slurm-client)
[ -x /usr/sbin/munged ] || need+=(munge)
if [ ${#need[@]} -gt 0 ]; then
    say "installing slurmctld slurmd slurm-client munge (missing: ${need[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

# --- munge -----------------------------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    say "creating MUNGE key /etc/munge/munge.key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! alive "$MUNGE_PID"; then
    rm -f "$MUNGE_PID" /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged
fi
for _ in $(seq 50); do
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.1
done
munge -n </dev/null | unmunge >/dev/null || { dump_logs; die "munged does not answer"; }

# --- slurm.conf --------------------------------------------------------------
if [ -n "${CELESTE_SLURM_MEM_MB:-}" ]; then
    MEM_MB=$CELESTE_SLURM_MEM_MB
else
    MEM_MB=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
fi
if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF" && [ "${CELESTE_SLURM_FORCE:-0}" != 1 ]; then
    die "$CONF exists and was not written by this script; set CELESTE_SLURM_FORCE=1 to overwrite it"
fi
install -d -m 0755 "$CONF_DIR" "$LOG_DIR" /var/lib/slurm "$STATE_DIR" "$SPOOL_DIR"
cat >"$CONF" <<EOF
$MARKER
# Single-node test cluster; see slurm/README.md.
ClusterName=celeste
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=pmi2
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

# --- daemons -----------------------------------------------------------------
if ! alive "$CTLD_PID"; then
    rm -f "$CTLD_PID"
    # -c: start from a clean state (no jobs or node states from an earlier run)
    slurmctld -c || { dump_logs; die "slurmctld did not start"; }
else
    scontrol reconfigure >/dev/null 2>&1 || true
fi
if ! alive "$SLURMD_PID"; then
    rm -f "$SLURMD_PID"
    slurmd -N localhost || { dump_logs; die "slurmd did not start"; }
fi

# --- wait for the node ---------------------------------------------------------
deadline=$(( $(date +%s) + TIMEOUT ))
st=""
while :; do
    st=$(node_state || true)
    case "$st" in
        idle|mixed|allocated) break ;;
        down|drain|drained|draining|fail|failing)
            # A node left down by an earlier state file: bring it back.
            scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
        say "node localhost did not become idle within ${TIMEOUT}s (state: '${st:-none}')"
        sinfo -N -l >&2 || true
        dump_logs
        exit 1
    fi
    sleep 0.5
done
t1=$(date +%s.%N)
say "up: node localhost $st, CPUs=$CPUS RealMemory=${MEM_MB}MB, config $CONF ($(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s)"
