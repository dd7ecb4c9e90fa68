#!/bin/bash
# jobgroup's agent on a Slurm node: supervision near the work.
#
# usage: agent.sh DIR TASK NAME VIEW   (one per node: the batch script starts one step per
#                                       task, one task per node; this node's rank is
#                                       SLURM_PROCID; VIEW: "private" when the batch script
#                                       started it in a mount and UTS namespace of its own)
#
# The controller (on the submit host) never runs a process per node. It asks this agent, through
# files in DIR (the job's folder on the filesystem the nodes share), to run each of the node's
# phases, and the agent runs each under jobgroup's shim here, on the node:
#   DIR/n/TASK-RANK/PHASE.ATTEMPT.start  a request (bash arrays: the shim's options, the command,
#                                        its variables; the status file); started once, at once
#   DIR/n/TASK-RANK/PHASE.ATTEMPT.stop   SIGTERM to that phase's shim (it stops the phase's whole
#                                        process tree: SIGTERM, SIGKILL after the grace)
#   DIR/n/TASK-RANK/PHASE.ATTEMPT.kill   SIGUSR1: the shim kills the tree now
#   DIR/end                              the group ended: leave (the batch script then exits with
#                                        the group's result, the number in this file)
# When a phase's shim has exited (its node's processes all gone, its status file written), the
# agent writes STATUS.exit (the shim's exit code) beside the status file. A restarted node's
# next attempt therefore never meets the previous attempt's processes.
# Wake-ups: DIR/n/TASK-RANK/wake (a FIFO) is written by the controller after each request, and
# DIR/wake by the agent after each exit, where both run on the same machine; elsewhere (another
# host over NFS) the agent looks every second and the controller every half second.
# The node's view: where the cluster allows it (root, or unprivileged user namespaces: the batch
# script tries once) the agent runs in a mount and UTS namespace of its own, so every phase it
# starts has the host name NAME-RANK and the group's hosts file (DIR/../hosts, bound over
# /etc/hosts before the first phase starts): `{task}-{rank}.{group}` resolves. Where it does
# not, each phase's log says so and only the SKYPILOT_* variables work.
# On SIGTERM (the job cancelled, its time limit) every phase gets SIGTERM and the agent waits.
set -u
dir=$1 task=$2 name=$3 ns=${4:-none} rank=${SLURM_PROCID:-0}
bound=
if [ "$ns" = private ]; then  # (a builtin write: no process spent on `hostname`)
  { echo "$name-$rank" >/proc/sys/kernel/hostname; } 2>/dev/null || ns=none
fi
me=$dir/n/$task-$rank
shim=$dir/jobgroup-shim
[ -d "$me" ] || mkdir -p "$me" || exit 1  # (made at submission: no process spent here)
[ -p "$me/wake" ] || mkfifo -m 600 "$me/wake" 2>/dev/null || [ -p "$me/wake" ] || {
  echo "jobgroup agent: cannot make the FIFO $me/wake" >&2; exit 1; }
exec 3<>"$me/wake" </dev/null

# The node's Slurm and GPU variables go to every phase (the request's variables come after them
# and win); those of this agent's own step do not.
pass=()
while IFS= read -r -d '' kv; do
  case $kv in
    SLURM_PROCID=*|SLURM_LOCALID=*|SLURM_STEP*|SLURM_TASK_PID=*|SLURM_SRUN_COMM*|\
    SLURM_LAUNCH_NODE_IPADDR=*|SLURM_GTIDS=*|SLURM_UMASK=*|SLURM_PRIO_PROCESS=*|\
    SLURM_TASKS_PER_NODE=*|SLURM_NTASKS=*|SLURM_NPROCS=*|SLURM_DISTRIBUTION=*|\
    SLURM_CPU_BIND*|SLURM_JOB_NAME=*|SLURM_SPANK*) ;;
    SLURM*=*|CUDA_VISIBLE_DEVICES=*|GPU_DEVICE_ORDINAL=*|ROCR_VISIBLE_DEVICES=*|\
    ZE_AFFINITY_MASK=*) pass+=("$kv") ;;
  esac
done </proc/self/environ

# Where no one else tracks this step in cgroup v2 (Slurm's cgroup/v1, or no Slurm cgroups) and
# a cgroup2 hierarchy is writable, each phase gets a tracking cgroup of its own (the shim's -G).
cg=
v2=
while IFS= read -r line; do case $line in 0::*) v2=${line#0::} ;; esac; done </proc/self/cgroup
if [ "$v2" = / ]; then  # (reading /proc/mounts line by line costs bash ~30 ms: look instead)
  for m in /sys/fs/cgroup/unified /sys/fs/cgroup; do
    [ -e "$m/cgroup.controllers" ] && { cg=$m/jobgroup-slurm; break; }
  done
  if [ -n "$cg" ]; then [ -d "$cg" ] || mkdir "$cg" 2>/dev/null; [ -w "$cg/cgroup.procs" ] || cg=; fi
fi

# What a phase's shim must not inherit: every variable exported here.
mapfile -t exported < <(compgen -e)
none=("/bin/sh" "-c" 'echo "jobgroup: this node allows no private namespaces: peer names do not resolve here; use the SKYPILOT_* variables" >&2; exec "$@"' jobgroup-node)

printf '%s %s %s\n' "${SLURMD_NODENAME:-?}" "$$" "$ns" >"$me/agent"  # for people, and tests

declare -A pid=() taken=() ended=() handled=()
term=0
trap 'term=1' TERM INT HUP

start() {  # $1: PHASE.ATTEMPT (taken once: the request file stays, the controller reads it)
  local name=$1
  [ -z "${taken[$name]:-}" ] || return 0
  taken[$name]=1
  if [ "$ns" != none ] && [ -z "$bound" ] && [ -e "$dir/../hosts" ]; then
    mount --bind "$dir/../hosts" /etc/hosts && bound=1
  fi
  (
    trap - TERM INT HUP
    status='' id='' opts=() cmd=() envs=()
    . "$me/$name.start"
    g=()
    if [ -n "$cg" ] && mkdir "$cg/$id" 2>/dev/null; then g=(-G "$cg/$id"); fi
    [ "$ns" != none ] || cmd=("${none[@]}" "${cmd[@]}")
    (
      unset "${exported[@]}" 2>/dev/null
      export "${pass[@]}" "${envs[@]}"
      exec "$shim" "${opts[@]}" "${g[@]}" -- "${cmd[@]}"
    ) </dev/null >>"$me/agent.log" 2>&1 &
    s=$!
    echo "P $name $s" >&3
    wait "$s"
    code=$?
    [ ${#g[@]} -eq 0 ] || rmdir "$cg/$id" 2>/dev/null
    echo "$code" >"$status.exit.tmp" && mv -f "$status.exit.tmp" "$status.exit"
    [ -p "$dir/wake" ] && { echo x 1<>"$dir/wake"; } 2>/dev/null
    echo "E $name" >&3
  ) &
}

scan() {
  local f n
  for f in "$me"/*.start; do
    [ -e "$f" ] || break
    n=${f##*/}
    start "${n%.start}"
  done
  for f in "$me"/*.stop "$me"/*.kill; do
    [ -e "$f" ] && [ -z "${handled[$f]:-}" ] || continue
    n=${f##*/}
    n=${n%.*}
    if [ -n "${pid[$n]:-}" ]; then
      if [ "${f##*.}" = kill ]; then kill -USR1 "${pid[$n]}"; else kill -TERM "${pid[$n]}"; fi 2>/dev/null
      handled[$f]=1
    elif [ -n "${ended[$n]:-}" ] || [ ! -e "$me/$n.start" ]; then
      handled[$f]=1  # ended already, or never asked for
    fi  # else: started, its shim's pid not read yet: at the next turn
  done
}

note() {  # a line from a phase's subshell: "P NAME PID" (its shim), "E NAME" (ended)
  set -- $1
  case ${1:-} in
    P) pid[$2]=$3 ;;
    E) unset "pid[$2]"; ended[$2]=1 ;;
  esac
}

scan
while [ "$term" = 0 ]; do
  if read -r -t 1 -u 3 line; then
    note "$line"
    while read -r -t 0 -u 3; do read -r -u 3 line && note "$line"; done
  fi
  [ "$term" = 0 ] || break
  scan
  [ -e "$dir/end" ] && break
done

# Leaving: the group ended (every phase has normally ended already: kill what has not), or Slurm
# ends the job (SIGTERM: every phase stops as a stop asks, Slurm kills after its KillWait).
if [ "$term" = 1 ]; then sig=TERM; else sig=USR1; fi
for n in "${!pid[@]}"; do kill -s "$sig" "${pid[$n]}" 2>/dev/null; done
until wait; do :; done
exit 0
