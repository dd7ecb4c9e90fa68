"""The node driver: the one bash script every pod's container runs (the same text for all).

What it does, in order:
0. unpacks the contents shipped as tar parts (`files.py`: above 1 MiB), each line of
   $JOBGROUP_UNPACK being `digest<TAB>destination` (`-`: the workdir), from
   /var/jobgroup/files/<digest>/part-*, with tar (else python3); a failure fails setup;
1. copies the task's workdir (shipped as a read-only ConfigMap at /var/jobgroup/workdir) to
   $JOBGROUP_WORKDIR, a writable folder, and `cd`s there (only when the task has a workdir);
2. runs the task's `setup` (from /etc/jobgroup/<task>.setup.sh) in its own session; on failure
   it writes `setup failed: exit N` to the termination log and exits with the same code;
3. touches /tmp/jobgroup/setup-done (the pod's startupProbe: the container is `started` once
   setup succeeded, which is how the controller learns it);
4. waits until every peer's name (`{task}-{rank}.{group}.{namespace}.svc.{domain}`) resolves
   — the headless Service publishes not-ready pods, so this takes seconds, not `sleep 30` —
   giving up after $JOBGROUP_DNS_WAIT seconds (exit 97, reason in the termination log);
5. when $JOBGROUP_RUN_GATE is 1 (bare pods created by the backend's controller), waits for
   /tmp/jobgroup/run, which the controller creates when every setup of the group succeeded
   (and depends_on allows); pods applied by hand (`--dryrun -o yaml`) and a JobSet's pods
   (whose order JobSet keeps) start `run` at once;
6. turns SKYPILOT_NODE_IPS (the task's nodes' DNS names, which have all resolved by now) into
   their IP addresses, as SkyPilot gives them (a name that gives no address stays);
7. runs `run` in its own session; exits with run's exit code.

SIGTERM (pod deletion) is handled from the first line: the driver is the container's PID 1, and
PID 1 ignores signals it has no handler for, so without a trap a pod deleted while it waits (for
peers, at the gate) would only end by SIGKILL after the whole grace period. While setup or run
runs, SIGTERM is forwarded to its whole process group (servers shut down within the grace
period) and the driver exits with its code; before and between them, the driver exits 143.
With $JOBGROUP_STOP_DELAY (an auxiliary task's termination_delay, in a JobSet: the pod is
deleted when the primary tasks have finished) SIGTERM reaches `run` that many seconds later, or
as soon as the pod's annotations (downward API, /etc/podinfo/annotations) carry
`jobgroup.dev/stop="now"`; `run` may end by itself before.
"""

from jobgroup.backends.kubernetes.files import UNPACK

DRIVER = r"""set -u
jg=/etc/jobgroup
note() { printf '%s' "$1" > /dev/termination-log 2>/dev/null || true; }
child=
phase=
delay=${JOBGROUP_STOP_DELAY:-0}
on_term() {
  [ -z "$child" ] && exit 143
  if [ "$phase" = run ] && [ "$delay" -gt 0 ]; then
    end=$((SECONDS + delay)); delay=0
    ( while [ "$SECONDS" -lt "$end" ] &&
          ! grep -qs 'jobgroup.dev/stop="now"' /etc/podinfo/annotations; do sleep 0.5; done
      kill -TERM -- "-$child" 2>/dev/null || kill -TERM "$child" 2>/dev/null ) &
    return
  fi
  kill -TERM -- "-$child" 2>/dev/null || kill -TERM "$child" 2>/dev/null
}
trap on_term TERM INT
# Runs script $1 in its own session and waits for it (interruptibly: the trap forwards SIGTERM).
run_child() {
  if command -v setsid >/dev/null 2>&1; then setsid bash "$1" & else bash "$1" & fi
  child=$!
  wait "$child"
  rc=$?
  while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done
  child=
  return "$rc"
}
mkdir -p /tmp/jobgroup
""" + UNPACK + r"""if [ -n "${JOBGROUP_UNPACK:-}" ]; then
  while IFS=$'\t' read -r src dst; do
    [ -n "$src" ] || continue
    [ "$dst" = - ] && dst=$JOBGROUP_WORKDIR
    if ! unpack "/var/jobgroup/files/$src" "$dst"; then
      echo "jobgroup: could not unpack the files shipped for $dst" >&2
      note "setup failed: exit 1"
      exit 1
    fi
  done <<EOF_UNPACK
$JOBGROUP_UNPACK
EOF_UNPACK
fi
if [ -n "${JOBGROUP_WORKDIR:-}" ]; then
  mkdir -p "$JOBGROUP_WORKDIR" || exit 1
  for f in /var/jobgroup/workdir/* /var/jobgroup/workdir/.[!.]*; do
    [ -e "$f" ] && cp -RL "$f" "$JOBGROUP_WORKDIR"/
  done
  cd "$JOBGROUP_WORKDIR" || exit 1
fi
if [ -s "$jg/$JOBGROUP_TASK.setup.sh" ]; then
  note setup
  run_child "$jg/$JOBGROUP_TASK.setup.sh"
  rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "jobgroup: setup failed (exit $rc)" >&2
    note "setup failed: exit $rc"
    exit "$rc"
  fi
fi
touch /tmp/jobgroup/setup-done
resolves() {
  getent hosts "$1" >/dev/null 2>&1 && return 0
  command -v python3 >/dev/null 2>&1 &&
    python3 -c 'import socket, sys; socket.getaddrinfo(sys.argv[1], None)' "$1" 2>/dev/null
}
deadline=$((SECONDS + ${JOBGROUP_DNS_WAIT:-600}))
for h in ${JOBGROUP_PEERS:-}; do
  until resolves "$h"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "jobgroup: $h did not resolve within ${JOBGROUP_DNS_WAIT:-600}s" >&2
      note "peer $h never resolved"
      exit 97
    fi
    sleep 0.5
  done
done
if [ "${JOBGROUP_RUN_GATE:-0}" = 1 ]; then
  until [ -e /tmp/jobgroup/run ]; do sleep 0.2; done
fi
ips=
for h in ${SKYPILOT_NODE_IPS:-}; do
  ip=$(getent ahosts "$h" 2>/dev/null | awk 'NR==1{print $1}')
  [ -z "$ip" ] && command -v python3 >/dev/null 2>&1 &&
    ip=$(python3 -c 'import socket, sys; print(socket.gethostbyname(sys.argv[1]))' "$h" 2>/dev/null)
  ips="$ips${ips:+
}${ip:-$h}"
done
[ -n "$ips" ] && export SKYPILOT_NODE_IPS="$ips"
note run
phase=run
run_child "$jg/$JOBGROUP_TASK.run.sh"
rc=$?
note "run exited $rc"
exit "$rc"
"""
