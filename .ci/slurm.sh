#!/usr/bin/env bash
# One-node Slurm cluster for the test suite and CI (Debian 12, slurm 22.05, munge 0.5), no systemd.
#
#   bash .ci/slurm.sh install    apt-get the packages + install the sacct stand-in (idempotent)
#   bash .ci/slurm.sh start      write config, start munged/slurmctld/slurmd, wait until the node is idle
#   bash .ci/slurm.sh status     exit 0 if the cluster is up, 1 if not
#   bash .ci/slurm.sh selftest   srun / array / failed / cancelled / signal / requeue round trips + sacct
#   bash .ci/slurm.sh stop       cancel all jobs, stop the daemons this script started (pid files)
#
# Layout: everything lives in one root-owned state dir, $CLSRL_SLURM_DIR (default /var/lib/clsrl-slurm):
#   etc/slurm.conf  munge/{munge.key,munge.socket,munged.pid,munged.log}  spool/{ctld,d}  run/*.pid  log/*.log
# /var/lib rather than /tmp: /tmp is world-writable (another user could pre-create the key or config) and
# tmp cleaners may delete a running controller's state; pid files surviving a reboot are harmless because
# a pid only counts as ours if /proc/<pid>/comm is the daemon's name.
# Outside the state dir the script touches only:
#   /etc/slurm/slurm.conf   a symlink to etc/slurm.conf, so sbatch/srun/sinfo (and submitit) need no SLURM_CONF
#   /usr/local/bin/sacct    the accounting stand-in (see write_sacct_standin), ahead of /usr/bin/sacct in PATH
#   /etc/hosts              only if the short hostname does not resolve (srun and gloo's MASTER_ADDR need it)
# Jobs: partition "debug" (Default=YES), one node = all CPUs (nproc) and the memory slurmd detects.
# Env: CLSRL_SLURM_DIR (state dir), CLSRL_SLURM_START_TIMEOUT (seconds per wait in start, default 60).
set -euo pipefail

STATE="${CLSRL_SLURM_DIR:-/var/lib/clsrl-slurm}"
WAIT_S="${CLSRL_SLURM_START_TIMEOUT:-60}"
PARTITION=debug
PKGS=(munge slurmctld slurmd slurm-client)
CONF="$STATE/etc/slurm.conf"
CONF_LINK=/etc/slurm/slurm.conf
MUNGE_DIR="$STATE/munge"
MUNGE_SOCK="$MUNGE_DIR/munge.socket"
RUN="$STATE/run"
LOGS="$STATE/log"
STANDIN=/usr/local/bin/sacct
STANDIN_MARK="clsrl-slurm sacct stand-in"
HOST="$(hostname -s)"

log() { echo "[slurm.sh] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

need_root() {  # re-run the whole command as root (sudo -n: never prompt, fail instead)
  [ "$(id -u)" -eq 0 ] && return 0
  exec sudo -n env CLSRL_SLURM_DIR="$STATE" CLSRL_SLURM_START_TIMEOUT="$WAIT_S" bash "$0" "$@"
}

# ---- pid files -------------------------------------------------------------------------------------
pidfile() { case "$1" in munged) echo "$MUNGE_DIR/munged.pid";; *) echo "$RUN/$1.pid";; esac; }

ours() {  # ours NAME -> print the pid if NAME's pid file names a live process called NAME
  local f p comm
  f="$(pidfile "$1")"
  [ -s "$f" ] || return 1
  p="$(tr -dc '0-9' <"$f")"
  [ -n "$p" ] && [ -r "/proc/$p/comm" ] || return 1
  comm="$(cat "/proc/$p/comm" 2>/dev/null)" || return 1
  # Debian's /usr/sbin/slurmd is an alternatives link to slurmd-wlm; either name is fine
  [ "$comm" = "$1" ] || [ "$comm" = "$1-wlm" ] || return 1
  echo "$p"
}

wait_until() {  # wait_until SECONDS CMD... -> 0 once CMD succeeds (CMD must bound itself, e.g. timeout 5)
  local deadline=$(( SECONDS + $1 )); shift
  while :; do
    "$@" >/dev/null 2>&1 && return 0
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 0.2
  done
}

# ---- install ---------------------------------------------------------------------------------------
write_sacct_standin() {
  # Why a stand-in: accounting_storage/none makes the real sacct fail ("accounting storage is disabled");
  # submitit then logs "Bypassing sacct error" and, for a job that died without writing its result
  # (os._exit, scancel, timeout, OOM), waits forever. slurmdbd would need MariaDB (+13 s start, and a
  # database server to babysit). This answers from slurmctld's memory (`scontrol show job -o`), which
  # keeps finished jobs for MinJobAge (a day, see slurm.conf). It prints allocation lines only (no
  # .batch/.0 step lines, which submitit skips anyway). If slurm.conf ever enables slurmdbd, it execs
  # the real sacct.
  if [ -e "$STANDIN" ] && ! grep -q "$STANDIN_MARK" "$STANDIN"; then
    die "$STANDIN exists and is not ours; remove it or set up slurmdbd"
  fi
  install -d -m 0755 "$(dirname "$STANDIN")"
  cat >"$STANDIN.tmp" <<'EOF'
#!/usr/bin/env bash
# clsrl-slurm sacct stand-in (written by .ci/slurm.sh install; safe to delete when the cluster is gone).
# Supports: -j/--jobs ID[,ID] (repeatable; ID or ARRAYID_TASK), -o/--format F[,F] (case-insensitive
# JobID JobIDRaw JobName State ExitCode DerivedExitCode NodeList Partition Elapsed Timelimit Submit
# Eligible Start End AllocCPUS NCPUS NNodes NTasks User UID Group WorkDir Reason Restarts; others print
# empty), -b/--brief, -n/--noheader, -P/--parsable2, -p/--parsable, -X (no-op: no step lines anyway).
# Everything else is accepted and ignored. Without -j: every job slurmctld still remembers.
# Default format, as in sacct: JobID,JobName,Partition,Account,AllocCPUS,State,ExitCode.
set -uf
conf="${SLURM_CONF:-/etc/slurm/slurm.conf}"
if grep -qiE '^[[:space:]]*AccountingStorageType[[:space:]]*=[[:space:]]*accounting_storage/slurmdbd' "$conf" 2>/dev/null; then
  exec /usr/bin/sacct "$@"
fi
fields="JobID,JobName,Partition,Account,AllocCPUS,State,ExitCode"; ids=(); header=1; mode=fixed
while [ $# -gt 0 ]; do
  case "$1" in
    -o|--format) fields="${2:-}"; shift;;
    --format=*) fields="${1#*=}";;
    -o*) fields="${1#-o}";;
    -j|--jobs) IFS=, read -ra more <<<"${2:-}"; ids+=("${more[@]}"); shift;;
    --jobs=*) IFS=, read -ra more <<<"${1#*=}"; ids+=("${more[@]}");;
    -j*) IFS=, read -ra more <<<"${1#-j}"; ids+=("${more[@]}");;
    -b|--brief) fields="JobID,State,ExitCode";;
    -n|--noheader) header=0;;
    -P|--parsable2) mode=p2;;
    -p|--parsable) mode=p1;;
    -h|--help) sed -n '2,8p' "$0"; exit 0;;
    -S|--starttime|-E|--endtime|-u|--user|--uid|-A|--accounts|-r|--partition|-s|--state|-M|--clusters|\
    -N|--nodelist|-g|--gid|--group|-q|--qos|-k|--timelimit-min|-K|--timelimit-max|-x|--associations|\
    -i|--nnodes|-I|--ncpus|-W|--wckeys|-C|--constraints|--name|--delimiter) shift;;
    *) ;;
  esac
  shift
done
IFS=, read -ra fl <<<"$fields"
for i in "${!fl[@]}"; do fl[$i]="${fl[$i]%%%*}"; done   # "JobID%20" -> "JobID"
emit() {  # emit VALUE... -> one output line in the requested style
  case "$mode" in
    p2) (IFS='|'; echo "$*");;
    p1) (IFS='|'; echo "$*|");;
    *) local v out=""; for v in "$@"; do out+="$(printf '%-12s ' "$v")"; done; echo "${out% }";;
  esac
}
canon() {  # header names spelled as sacct spells them, whatever case was asked for
  local f n
  for f in "$@"; do
    n=""
    for c in JobID JobIDRaw JobName State ExitCode DerivedExitCode NodeList Partition Account Elapsed Timelimit \
             Submit Eligible Start End AllocCPUS NCPUS ReqCPUS NNodes NTasks User UID Group WorkDir Reason Restarts; do
      [ "${f,,}" = "${c,,}" ] && n="$c"
    done
    printf '%s\n' "${n:-$f}"
  done
}
if [ "$header" = 1 ]; then
  mapfile -t names < <(canon "${fl[@]}")
  emit "${names[@]}"
  if [ "$mode" = fixed ]; then d=(); for f in "${fl[@]}"; do d+=("------------"); done; emit "${d[@]}"; fi
fi
declare -A F
parse() {  # `scontrol show job -o` line -> F[Key]=Value (a space inside a value joins the previous key)
  F=(); local tok key=""
  for tok in $1; do
    if [[ $tok =~ ^([A-Za-z][A-Za-z0-9:/_]*)=(.*)$ ]]; then key="${BASH_REMATCH[1]}"; F[$key]="${BASH_REMATCH[2]}"
    elif [ -n "$key" ]; then F[$key]+=" $tok"; fi
  done
}
show() { if [ ${#ids[@]} -eq 0 ]; then scontrol show job -o 2>/dev/null; else for id in "${ids[@]}"; do scontrol show job -o "${id%%.*}" 2>/dev/null; done; fi; }
declare -A seen
while IFS= read -r line; do
  case "$line" in JobId=*) ;; *) continue;; esac
  parse "$line"
  jid="${F[JobId]:-}"; [ -n "$jid" ] || continue
  [ -n "${seen[$jid]:-}" ] && continue; seen[$jid]=1
  disp="$jid"; aj="${F[ArrayJobId]:-}"; at="${F[ArrayTaskId]:-}"
  if [ -n "$aj" ] && [ -n "$at" ]; then
    case "$at" in *[-,%]*) disp="${aj}_[${at}]";; *) disp="${aj}_${at}";; esac   # pending rest: 12_[1-2]
  fi
  out=()
  for f in "${fl[@]}"; do
    case "${f,,}" in
      jobid) v="$disp";;
      jobidraw) v="$jid";;
      jobname) v="${F[JobName]:-}";;
      state) v="${F[JobState]:-UNKNOWN}";;
      exitcode) v="${F[ExitCode]:-}";;
      derivedexitcode) v="${F[DerivedExitCode]:-}";;
      nodelist) v="${F[NodeList]:-}"; case "$v" in ""|"(null)") v="None assigned";; esac;;
      partition) v="${F[Partition]:-}";;
      account) v="${F[Account]:-}"; [ "$v" = "(null)" ] && v="";;
      elapsed) v="${F[RunTime]:-}";;
      timelimit) v="${F[TimeLimit]:-}";;
      submit) v="${F[SubmitTime]:-}";;
      eligible) v="${F[EligibleTime]:-}";;
      start) v="${F[StartTime]:-}";;
      end) v="${F[EndTime]:-}";;
      alloccpus|ncpus|reqcpus) v="${F[NumCPUs]:-}";;
      nnodes) v="${F[NumNodes]:-}";;
      ntasks) v="${F[NumTasks]:-}";;
      user) v="${F[UserId]:-}"; v="${v%%(*}";;
      uid) v="${F[UserId]:-}"; v="${v#*(}"; v="${v%)}";;
      group) v="${F[GroupId]:-}"; v="${v%%(*}";;
      workdir) v="${F[WorkDir]:-}";;
      reason) v="${F[Reason]:-}";;
      restarts) v="${F[Restarts]:-}";;
      *) v="";;
    esac
    out+=("$v")
  done
  emit "${out[@]}"
done < <(show)
exit 0
EOF
  chmod 0755 "$STANDIN.tmp"
  mv -f "$STANDIN.tmp" "$STANDIN"
}

installed() {
  local p
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
  done
  [ -x "$STANDIN" ] && grep -q "$STANDIN_MARK" "$STANDIN"
}

do_install() {
  local p missing=() t0; t0="$(now)"
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    # Keep the packages' postinst from starting munge/slurmctld/slurmd through /etc/init.d (no systemd
    # here): those daemons would use the package defaults, not ours, and stop would not know them.
    local policy=/usr/sbin/policy-rc.d ours_policy=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 0755 "$policy"; ours_policy=1; fi
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0 install --no-install-recommends)
    local rc=0
    "${apt[@]}" "${missing[@]}" >"/tmp/clsrl-slurm-apt.log" 2>&1 || {
      # stale or missing package lists on a fresh image: refresh once and retry
      log "apt-get install failed; apt-get update and retry"
      { apt-get update -q && "${apt[@]}" "${missing[@]}"; } >>"/tmp/clsrl-slurm-apt.log" 2>&1 || rc=$?
    }
    [ "$ours_policy" = 1 ] && rm -f "$policy"
    [ "$rc" -eq 0 ] || { tail -20 /tmp/clsrl-slurm-apt.log >&2; die "apt-get install ${missing[*]} failed"; }
  fi
  write_sacct_standin
  log "installed ($(since "$t0") s): $(dpkg-query -W -f='${Package} ${Version}\n' slurmctld munge | tr '\n' ' ')"
}

# ---- start -----------------------------------------------------------------------------------------
write_config() {
  local cpus hw mem topo=""
  cpus="$(nproc)"
  hw="$(timeout 20 slurmd -C 2>/dev/null | head -1)" || true
  mem="$(sed -nE 's/.*RealMemory=([0-9]+).*/\1/p' <<<"$hw")"
  [ -n "$mem" ] || mem=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
  # the socket/core layout slurmd sees, if it agrees with nproc (it may not under a CPU affinity mask)
  if [ "$(sed -nE 's/.*CPUs=([0-9]+).*/\1/p' <<<"$hw")" = "$cpus" ]; then
    topo="$(grep -oE '(Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+' <<<"$hw" | tr '\n' ' ')"
  fi
  install -d -m 0755 "$STATE/etc"
  cat >"$CONF.tmp" <<EOF
# Written by .ci/slurm.sh start (rewritten on every cold start; edit the script, not this file).
ClusterName=clsrl
# loopback address: no DNS needed for daemons to find each other
SlurmctldHost=${HOST}(127.0.0.1)
# daemons run as root: no 'slurm' user, no chown of the state dir; jobs run as whoever submits them
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# our private munged (own key and socket in the state dir), not a system-wide one
AuthInfo=socket=${MUNGE_SOCK}
StateSaveLocation=${STATE}/spool/ctld
SlurmdSpoolDir=${STATE}/spool/d
SlurmctldPidFile=${RUN}/slurmctld.pid
SlurmdPidFile=${RUN}/slurmd.pid
SlurmctldLogFile=${LOGS}/slurmctld.log
SlurmdLogFile=${LOGS}/slurmd.log
# no cgroups (cgroup v2 needs systemd delegation): track job processes by process tree, no CPU binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
# CPUs (not cores) and memory are what jobs consume; a job without --mem gets its CPUs' share of memory
# instead of the whole node (which would block every other job)
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$(( mem / cpus ))
# no slurmdbd: sacct is the stand-in in ${STANDIN}, which reads finished jobs from slurmctld's memory,
# so keep them there for a day (default 300 s)
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=86400
# batch jobs may be requeued (scontrol requeue; submitit requeues itself on preemption)
JobRequeue=1
# a node marked DOWN (e.g. slurmd stopped before slurmctld) comes back as soon as slurmd registers
ReturnToService=2
# start a submitted batch job at the next scheduler pass (~1 s) instead of after the default 3 s delay
SchedulerParameters=batch_sched_delay=0
# SIGTERM -> SIGKILL grace on scancel/time limit: 5 s instead of 30 keeps tests short
KillWait=5
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${cpus} ${topo}RealMemory=${mem} State=UNKNOWN
PartitionName=${PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  mv -f "$CONF.tmp" "$CONF"
  log "node ${HOST}: CPUs=${cpus} ${topo}RealMemory=${mem} MB, partition ${PARTITION} (default)"
}

link_ok() {  # /etc/slurm/slurm.conf is absent or already our link
  [ ! -e "$CONF_LINK" ] && [ ! -L "$CONF_LINK" ] && return 0
  [ -L "$CONF_LINK" ] && [ "$(readlink "$CONF_LINK")" = "$CONF" ]
}
link_config() {
  install -d -m 0755 "$(dirname "$CONF_LINK")"
  [ -L "$CONF_LINK" ] || ln -s "$CONF" "$CONF_LINK"
}

fix_hosts() {
  # srun and the ranks' MASTER_ADDR (first host of SLURM_JOB_NODELIST) resolve the node's name
  getent hosts "$HOST" >/dev/null 2>&1 && return 0
  log "adding '127.0.0.1 $HOST' to /etc/hosts"
  echo "127.0.0.1 $HOST  # added by clsrl .ci/slurm.sh" >>/etc/hosts
}

start_munged() {
  install -d -o munge -g munge -m 0755 "$MUNGE_DIR"   # 0755: non-root clients must reach the socket
  if [ ! -s "$MUNGE_DIR/munge.key" ]; then
    mungekey --create --keyfile="$MUNGE_DIR/munge.key" --force
  fi
  chown munge:munge "$MUNGE_DIR/munge.key"; chmod 0400 "$MUNGE_DIR/munge.key"
  if ours munged >/dev/null; then return 0; fi
  rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
  # munged forks into the background by itself; std fds to /dev/null so a caller's pipe is not held open
  runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCK" --key-file="$MUNGE_DIR/munge.key" \
    --pid-file="$(pidfile munged)" --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" \
    </dev/null >/dev/null 2>&1 || fail "munged did not start" "$MUNGE_DIR/munged.log"
  wait_until "$WAIT_S" timeout 5 bash -c "munge -n -S '$MUNGE_SOCK' | unmunge -S '$MUNGE_SOCK'" \
    || fail "munge round trip failed" "$MUNGE_DIR/munged.log"
}

node_state() { timeout 5 sinfo -h -n "$HOST" -o %T 2>/dev/null | head -1; }
gone() {  # gone NAME: NAME's daemon is not running 3 s after its launch (its pid file may lag the fork)
  [ $(( SECONDS - LAUNCHED )) -ge 3 ] && ! ours "$1" >/dev/null
}
LAUNCHED=0
node_ready() { case "$(node_state)" in idle|mixed|allocated|completing|planned) return 0;; *) return 1;; esac; }
ctld_up() { [[ "$(timeout 5 scontrol ping 2>/dev/null)" == *"is UP"* ]]; }

fail() {  # fail MESSAGE [LOGFILE...]: show why, stop what we started, exit 1 (start never leaves half a cluster)
  local msg="$1" f; shift
  log "ERROR: $msg"
  # (the mpi/pmix "can not load PMIx library" errors are noise: MpiDefault=none, the plugin just fails to init)
  for f in "$@"; do [ -f "$f" ] && { echo "---- tail $f" >&2; grep -vE 'pmix|MPI: Cannot' "$f" | tail -15 >&2; }; done
  timeout 5 sinfo -R >&2 2>/dev/null || true
  do_stop || true
  exit 1
}

do_start() {
  local t0; t0="$(now)"
  if ours munged >/dev/null && ours slurmctld >/dev/null && ours slurmd >/dev/null && node_ready; then
    log "already running (node $HOST $(node_state)); nothing to do"
    return 0
  fi
  installed || do_install
  # one cluster per machine: clients find it through /etc/slurm/slurm.conf, so refuse to take over another
  link_ok || die "$CONF_LINK exists and is not a link to $CONF (another Slurm setup, or another state dir); move it away"
  install -d -m 0755 "$STATE" "$STATE/etc" "$RUN" "$LOGS" "$STATE/spool" "$STATE/spool/ctld" "$STATE/spool/d"
  fix_hosts
  start_munged
  local cold=0
  if ! ours slurmctld >/dev/null; then
    cold=1
    write_config      # only while slurmctld is down: never change a running cluster under its feet
    link_config
    # slurmctld/slurmd fork into the background by themselves; std fds to /dev/null so that a caller's
    # pipe or $(...) is not held open by a daemon (`start | tee log` would never end)
    LAUNCHED=$SECONDS
    /usr/sbin/slurmctld </dev/null >/dev/null 2>&1 || fail "slurmctld did not start" "$LOGS/slurmctld.log"
  fi
  # stop waiting early if the daemon died (bad config, port in use): the log says why
  wait_until "$WAIT_S" eval 'ctld_up || gone slurmctld' && ! gone slurmctld \
    || fail "slurmctld not answering (or exited) after ${WAIT_S}s" "$LOGS/slurmctld.log"
  if ! ours slurmd >/dev/null; then
    LAUNCHED=$SECONDS
    /usr/sbin/slurmd </dev/null >/dev/null 2>&1 || fail "slurmd did not start" "$LOGS/slurmd.log"
  fi
  wait_until 10 eval 'node_ready || gone slurmd' || true
  gone slurmd && fail "slurmd exited" "$LOGS/slurmd.log"
  if ! node_ready; then
    # a node left DOWN/DRAINED by an earlier run (state is kept in spool/ctld): it is ours, resume it
    log "node is '$(node_state)'; resuming it"
    timeout 10 scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
    wait_until "$WAIT_S" node_ready || fail "node $HOST is '$(node_state)', not idle" "$LOGS/slurmd.log" "$LOGS/slurmctld.log"
  fi
  if [ "$cold" = 1 ]; then
    # spool/ctld keeps the queue across restarts (and job ids keep counting up); jobs still queued from
    # an earlier session (one that ended without `stop`) would otherwise run again now
    local left; left="$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')" || true
    if [ -n "${left// }" ]; then
      log "cancelling jobs left from an earlier session: $left"
      # shellcheck disable=SC2086
      timeout 10 scancel $left 2>/dev/null || true
      wait_until 20 timeout 5 bash -c '[ -z "$(squeue -h -o %A)" ]' || log "WARNING: jobs still queued: $left"
    fi
  fi
  log "cluster up in $(since "$t0") s: $(timeout 5 sinfo -h -o '%P %D %c CPUs %m MB %T' | head -1)"
  if [ "$(command -v sacct)" != "$STANDIN" ]; then
    log "WARNING: sacct in this PATH is '$(command -v sacct)', not $STANDIN: submitit would not see failed jobs"
  fi
}

# ---- stop ------------------------------------------------------------------------------------------
kill_wait() {  # kill_wait NAME PID SECONDS: SIGTERM, wait, then SIGKILL
  local name="$1" p="$2" t="$3" i
  kill "$p" 2>/dev/null || return 0
  for ((i = 0; i < t * 5; i++)); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.2; done
  log "$name (pid $p) still alive after ${t}s; SIGKILL"
  kill -9 "$p" 2>/dev/null || true
}

our_stepds() {  # slurmstepd processes spawned by our slurmd (their cwd is in our state dir: log/)
  local d p
  for d in /proc/[0-9]*; do
    [ "$(cat "$d/comm" 2>/dev/null)" = slurmstepd ] || continue
    p="$(readlink "$d/cwd" 2>/dev/null)" || continue
    case "$p" in "$STATE"|"$STATE"/*) echo "${d#/proc/}";; esac
  done
}

kill_tree() {  # SIGKILL a process and all its descendants (children first found, then the parent)
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$c"; done
  kill -9 "$1" 2>/dev/null || true
}

do_stop() {
  local p jobs
  if p="$(ours slurmctld)"; then
    jobs="$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')" || true
    if [ -n "${jobs// }" ]; then
      log "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      timeout 10 scancel $jobs 2>/dev/null || true
      wait_until 20 timeout 5 bash -c '[ -z "$(squeue -h -o %A)" ]' || log "jobs still listed after 20s"
    fi
  fi
  if p="$(ours slurmd)"; then log "stopping slurmd ($p)"; kill_wait slurmd "$p" 10; fi
  # only if jobs could not be cancelled (slurmctld dead): their slurmstepd and its job processes
  for p in $(our_stepds); do log "killing leftover slurmstepd $p and its job processes"; kill_tree "$p"; done
  if p="$(ours slurmctld)"; then log "stopping slurmctld ($p)"; kill_wait slurmctld "$p" 20; fi
  if p="$(ours munged)"; then log "stopping munged ($p)"; kill_wait munged "$p" 10; fi
  rm -f "$RUN/slurmd.pid" "$RUN/slurmctld.pid" "$(pidfile munged)"
  log "stopped"
}

# ---- status ----------------------------------------------------------------------------------------
do_status() {
  local n p up=0
  for n in munged slurmctld slurmd; do
    if p="$(ours "$n")"; then echo "$n: running (pid $p)"; else echo "$n: stopped"; up=1; fi
  done
  if [ "$up" -eq 0 ] && node_ready; then
    timeout 5 sinfo -o '%P %a %D %c %m %T' || true
    echo "cluster: UP (state dir $STATE)"
    return 0
  fi
  [ "$up" -eq 0 ] && echo "cluster: DOWN (daemons running, node '$(node_state)')" || echo "cluster: DOWN"
  return 1
}

# ---- selftest --------------------------------------------------------------------------------------
ST_FAIL=0
check() {  # check DESCRIPTION CMD...
  local d="$1"; shift
  if "$@"; then echo "  ok    $d"; else echo "  FAIL  $d"; ST_FAIL=1; fi
}
wait_state() {  # wait_state JOBID SECONDS STATE... (all array tasks must reach one of the states)
  local j="$1" t="$2" deadline; shift 2; deadline=$(( SECONDS + t ))
  local want; want="|$(IFS='|'; echo "$*")|"
  while :; do
    local states bad=0 s
    states="$(timeout 5 scontrol show job -o "$j" 2>/dev/null | grep -oE 'JobState=[A-Z_]+' | cut -d= -f2)" || true
    if [ -n "$states" ]; then
      for s in $states; do [[ "$want" == *"|$s|"* ]] || bad=1; done
      [ "$bad" -eq 0 ] && return 0
    fi
    [ "$SECONDS" -ge "$deadline" ] && { log "job $j: states '$(echo $states)', wanted $*"; return 1; }
    sleep 0.2
  done
}
sacct_is() {  # sacct_is JOBID EXPECTED_LINES: the exact lines submitit-style sacct prints (sorted)
  local got; got="$(sacct -j "$1" -o JobID,State,ExitCode --parsable2 --noheader | sort)"
  [ "$got" = "$(printf '%b' "$2" | sort)" ] || { log "sacct -j $1: got [$got] want [$(printf '%b' "$2")]"; return 1; }
}
ST_JOBS=()
sub() { j="$(timeout 30 sbatch --parsable "$@")" && ST_JOBS+=("$j"); }   # sets j; remembered for cleanup
timed() { local t0; t0="$(now)"; "$@"; local rc=$?; echo "        ($(since "$t0") s)"; return $rc; }

do_selftest() {
  do_status >/dev/null || die "cluster is not up (bash $0 start)"
  local d t_all j out
  t_all="$(now)"
  d="$(mktemp -d /tmp/clsrl-slurm-selftest.XXXXXX)"; chmod 0755 "$d"
  cd "$d"
  echo "selftest in $d (sacct = $(command -v sacct))"

  # (a) srun with 2 tasks on the node's 2 CPUs: directly, and inside sbatch as submitit does it
  a_srun() { out="$(timeout 60 srun -N1 --ntasks-per-node=2 -t 1 bash -c 'echo rank=$SLURM_PROCID/$SLURM_NTASKS' | sort | tr '\n' ' ')"; [ "$out" = "rank=0/2 rank=1/2 " ] || { log "srun: [$out]"; return 1; }; }
  timed check "(a) srun --ntasks-per-node=2 prints SLURM_PROCID 0 and 1" a_srun
  a_batch() {
    sub -N1 --ntasks-per-node=2 -t 1 -o a.out --wrap 'srun bash -c "echo rank=\$SLURM_PROCID"' &&
    wait_state "$j" 60 COMPLETED && [ "$(sort a.out | tr '\n' ' ')" = "rank=0 rank=1 " ] && sacct_is "$j" "$j|COMPLETED|0:0"
  }
  timed check "(a) sbatch + srun 2 ranks, sacct COMPLETED" a_batch

  # (b) 3-task job array
  b_array() {
    sub -a 0-2 -t 1 -o 'b_%a.out' --wrap 'echo task=$SLURM_ARRAY_TASK_ID' &&
    wait_state "$j" 60 COMPLETED && [ "$(cat b_0.out b_1.out b_2.out | tr '\n' ' ')" = "task=0 task=1 task=2 " ] &&
    sacct_is "$j" "${j}_0|COMPLETED|0:0\n${j}_1|COMPLETED|0:0\n${j}_2|COMPLETED|0:0"
  }
  timed check "(b) job array 0-2, sacct ID_0..ID_2 COMPLETED" b_array

  # (c) a job that exits 1
  c_fail() { sub -t 1 -o c.out --wrap 'exit 1' && wait_state "$j" 60 FAILED && sacct_is "$j" "$j|FAILED|1:0"; }
  timed check "(c) exit 1 -> sacct FAILED 1:0" c_fail

  # (d) scancel of a running job
  d_cancel() {
    sub -t 1 -o d.out --wrap 'sleep 120' && wait_state "$j" 60 RUNNING &&
    scancel "$j" && wait_state "$j" 30 CANCELLED && sacct_is "$j" "$j|CANCELLED|0:15"
  }
  timed check "(d) scancel running job -> sacct CANCELLED" d_cancel

  # (e) signals: scancel --signal=USR2 reaches the srun task (submitit's default preemption signal)
  e_signal() {
    sub -t 1 -o e.out --wrap 'srun bash -c "trap \"echo got USR2; exit 0\" USR2; echo armed; sleep 100 & wait"' &&
    wait_until 30 grep -q armed e.out && scancel --signal=USR2 "$j" && wait_state "$j" 30 COMPLETED && grep -q "got USR2" e.out
  }
  timed check "(e) scancel --signal=USR2 delivered to the task" e_signal

  # (f) requeue of a running job: the rerun sees SLURM_RESTART_COUNT=1; StartTime=now skips the hold
  f_requeue() {
    sub -t 2 --open-mode=append -o f.out --wrap \
      'echo restart=${SLURM_RESTART_COUNT:-0}; [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] || sleep 120' &&
    wait_until 30 grep -q restart=0 f.out && scontrol requeue "$j" && wait_state "$j" 30 PENDING &&
    scontrol update JobId="$j" StartTime=now && wait_state "$j" 60 COMPLETED &&
    [ "$(grep -o 'restart=[0-9]*' f.out | tr '\n' ' ')" = "restart=0 restart=1 " ] && sacct_is "$j" "$j|COMPLETED|0:0"
  }
  timed check "(f) scontrol requeue -> rerun with SLURM_RESTART_COUNT=1, COMPLETED" f_requeue

  # submitit's own call must parse: header line + JobID|State|NodeList
  g_submitit() {
    out="$(sacct -o JobID,State,NodeList --parsable2 -j "$j")" &&
    [ "$out" = "$(printf 'JobID|State|NodeList\n%s|COMPLETED|%s' "$j" "$HOST")" ] || { log "sacct: [$out]"; return 1; }
  }
  check "submitit's call 'sacct -o JobID,State,NodeList --parsable2 -j ID' -> header + ID|COMPLETED|$HOST" g_submitit

  timeout 10 scancel "${ST_JOBS[@]}" 2>/dev/null || true   # nothing of ours left queued if a check failed
  cd /; rm -rf "$d"
  echo "selftest: $([ "$ST_FAIL" -eq 0 ] && echo PASSED || echo FAILED) in $(since "$t_all") s"
  return "$ST_FAIL"
}

case "${1:-}" in
  install) need_root "$@"; do_install ;;
  start) need_root "$@"; do_start ;;
  stop) need_root "$@"; do_stop ;;
  status) do_status ;;
  selftest) do_selftest ;;
  *) echo "usage: $0 {install|start|stop|status|selftest}" >&2; exit 2 ;;
esac
