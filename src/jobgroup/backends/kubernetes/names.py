"""Task and group names as Kubernetes takes them: a deterministic DNS-safe form, and how the
names as written still resolve.

Kubernetes wants a pod's `hostname` and `subdomain` to be DNS-1123 labels (a-z, 0-9 and '-', at
most 63 characters, a letter or digit at both ends) and a Service's name a DNS-1035 label (the
same, starting with a letter); jobgroup (like SkyPilot) accepts task and group names with '_' and
upper-case letters. `dns_name` maps a name to the form its objects and hosts carry:
- a name that already is a DNS-1123 label is kept as it is (every existing example: nothing
  changes for them);
- any other is lower-cased, each run of other characters ('_', '.') becomes '-', '-' at the ends
  is dropped, the rest cut to 49 characters, then `-` and the first 6 hex digits of the SHA-256
  of the name *as written* are added: `my_task` -> `my-task-<6 hex>`, `RL_Group` ->
  `rl-group-<6 hex>`. The suffix keeps apart the names that would otherwise meet (`my_task` and
  `my-task`, `Trainer` and `trainer`) and makes the mapping the same at every launch, on every
  machine and after a controller restart, with no state; at most 56 characters, so
  `{task}-{rank}` stays a label.
Names of other than ASCII letters, digits, '-' and '_', and names longer than 63 characters,
are refused at launch (`render.problems`).

The names as written, `{task}-{rank}.{group}` and `{task}-{rank}`, cannot be DNS records. How they
still resolve, as far as Kubernetes allows:
- **the SKYPILOT_* variables** carry names that resolve everywhere: `SKYPILOT_NODE_IPS` and
  `SKYPILOT_JOBGROUP_HOST_<TASK>` (TASK from the name as written: `my_task` ->
  `SKYPILOT_JOBGROUP_HOST_MY_TASK`) are the DNS-safe FQDNs
  (`my-task-<h>-0.rl-group-<h>.<namespace>.svc.<domain>`), `JOBGROUP_HOSTNAME`/`JOBGROUP_FQDN`
  the pod's real hostname and name; `SKYPILOT_JOBGROUP_NAME` stays the name as written;
- **/etc/hosts in the pod** (hostAliases cannot: pod addresses are not known when the pods are
  made): when a group has such names, its ConfigMap carries `hostaliases` (DNS-safe FQDN, then
  the names as written, per node) and each `run` starts by adding `address  names-as-written`
  lines to the pod's /etc/hosts for every node whose DNS-safe name resolves (the driver has
  waited for all of them), then keeps them current every `ALIAS_REFRESH` seconds in the
  background (a restarted node comes back with a new address), so
  `server-0.${SKYPILOT_JOBGROUP_NAME}` resolves as on SkyPilot (which also writes /etc/hosts on
  Kubernetes: `sky/jobs/job_group_networking.py`). This needs a writable
  /etc/hosts (the container runs as root, the kubelet's default); where it is not, only the
  variables and the DNS-safe names work. `setup` runs before peers are waited for: there only
  the variables are meant to be used.
"""

from __future__ import annotations

import hashlib
import re

from jobgroup.spec.names import MAX_LABEL, dns_label_problem

_BASE = 49  # + '-' + 6 hex = 56: room for `-{rank}` in a hostname
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
ALIAS_REFRESH = 5  # seconds between two updates of a pod's /etc/hosts aliases
ALIASES_KEY = "hostaliases"  # in the job ConfigMap: `safe-fqdn name-as-written...` per node


def dns_name(name: str) -> str:
    """The DNS-1123 label that stands for `name` in object names and hostnames (see the module
    docstring): `name` itself when it is one, else lower case, '-' for other characters and a
    6-hex-digit hash of `name`. Idempotent: a result maps to itself."""
    if dns_label_problem(name) is None:
        return name
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:_BASE].strip("-")
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{base}-{digest}" if base else f"n-{digest}"


def name_problem(name: str, what: str) -> str | None:
    """Why `name` (of a `what`: 'group' or 'task') has no DNS-safe form (None: it has one)."""
    if len(name) > MAX_LABEL:
        return (f"{what} name {name!r} is not a valid DNS label (it is longer than {MAX_LABEL} "
                f"characters ({len(name)})); on kubernetes it names pods and their hosts")
    if not name.isascii() or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return (f"{what} name {name!r} is not a valid DNS label (it has characters other than "
                "letters a-z/A-Z, digits, '-' and '_'); on kubernetes it names pods and their "
                "hosts")
    return None


def service_name_ok(name: str) -> bool:
    """Whether `name` (a DNS-safe group name) may name a Service (DNS-1035: starts with a
    letter)."""
    return bool(_DNS_1035.fullmatch(name))


def changed(name: str) -> bool:
    return dns_name(name) != name


ALIAS_SCRIPT = r"""# jobgroup: names as written in the YAML ({task}-{rank}.{group}) that Kubernetes' DNS cannot
# hold resolve through /etc/hosts: `hostaliases.sh once` adds them, `loop` keeps them current.
list=/etc/jobgroup/hostaliases
mark='# jobgroup-alias'
lookup() {
  if command -v getent >/dev/null 2>&1; then
    getent ahosts "$1" 2>/dev/null | awk 'NR==1{print $1}'
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket, sys; print(socket.gethostbyname(sys.argv[1]))' "$1" 2>/dev/null
  fi
}
update() {
  [ -w /etc/hosts ] && [ -r "$list" ] || return 0
  want=
  while read -r fqdn names; do
    [ -n "$fqdn" ] || continue
    ip=$(lookup "$fqdn")
    [ -n "$ip" ] && want="$want$ip $names $mark
"
  done < "$list"
  have=$(grep -F -e "$mark" /etc/hosts 2>/dev/null)
  [ "$have" = "${want%
}" ] && return 0
  if [ -z "$have" ]; then
    printf '%s' "$want" >> /etc/hosts
  else
    rest=$(grep -v -F -e "$mark" /etc/hosts)
    printf '%s\n%s' "$rest" "$want" > /etc/hosts
  fi
}
update
if [ "${1:-once}" = loop ]; then
  while sleep "${JOBGROUP_ALIAS_REFRESH:-5}"; do update; done
fi
"""

RUN_PREAMBLE = """\
# added by jobgroup: the node names as written resolve (names.py); not part of the task's run
bash /etc/jobgroup/hostaliases.sh once
( bash /etc/jobgroup/hostaliases.sh loop </dev/null >/dev/null 2>&1 & )
"""
