"""The controller: one long-lived asyncio process per state directory supervising every group.

Contract:
- At most one runs per state directory (an exclusive flock on `controller.lock`, held for life).
- Commands never talk to it except to wake it (a datagram on the socket file `controller.wake`
  in the private state directory) or to hand it a launch (`controller.rpc`): they write intent
  to the store, then wake it. It reconciles each
  job that changed: load the job's rows, `decide()` purely, apply the actions, repeat.
- It learns of every phase's end from its backend (pidfds of local shims, a pod watch) and
  settles it from the backend's durable record (the shim's status file, the pod's status), so
  a restarted controller (`adopt`) picks up exactly where the previous one was killed: running
  phases are watched again (by the handle stored for each), ended ones settled.
- Backends are told about jobs, never read the store: `JobContext`s for `admit`/`prepare`,
  `BackendJobs` for what they ask later.
- SIGTERM/SIGINT stop the controller only; the groups keep running and are adopted next time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

import msgspec

from jobgroup import discovery, faults, nodescript
from jobgroup.backends.base import (
    ENDED, Backend, Handle, JobContext, NodeRef, Outcome, PhaseLaunch, Refused, Unreachable,
)
from jobgroup.controller import creds, probes, sockname
from jobgroup.controller import placement as placements
from jobgroup.controller.decide import (
    Abandon, JobView, MarkReady, Plan, ResetTask, RestartGroup, RestartTask, SetJob, SetOutcome,
    SetTask, StartPhase, StopNode, TaskInfo, decide, task_info,
)
from jobgroup.envvars import inherited
from jobgroup.errors import JobGroupError, StateUnwritable
from jobgroup.spec import load
from jobgroup.spec.durations import parse_duration
from jobgroup.spec.models import JobGroup
from jobgroup.state import layout as paths
from jobgroup.state import transitions
from jobgroup.state.status import Phase, Status
from jobgroup.state.store import JobRec, NodeRec, Store, unwritable_reason

log = logging.getLogger("jobgroup.controller")

SWEEP_SECONDS = 60.0  # safety net only: every state change also wakes the controller at once
MAX_ROUNDS = 50  # decide/apply rounds per reconcile before yielding (converges in a few)
RETRY_UNREACHABLE = 2.0  # seconds before asking a cluster's API again after it did not answer


class Controller:
    def __init__(self, home: Path, backend: Backend | None = None) -> None:
        self.home = home
        self.store = Store(home)
        if backend is None:
            from jobgroup.backends.local.backend import LocalBackend

            backend = LocalBackend(home)
        self.backends: dict[str, Backend] = {"local": backend}
        self._backend_key: dict[int, str] = {}  # job -> its key in self.backends
        from jobgroup.resources import inventory

        self.inventory = inventory.detect(home)
        self.loop = asyncio.new_event_loop()
        self._dirty: set[int] = set()
        self._scheduled = False
        self._freed = False
        self._seen_up_to = 0  # highest job id looked at (for _scan_intents)
        self._late_cancels: set[int] = set()  # cancels of jobs winding down, already looked at
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._specs: dict[int, tuple[JobGroup, list[TaskInfo]]] = {}
        self.jobs = BackendJobs(home, self._specs)  # what backends ask about jobs
        backend.jobs = self.jobs
        self._addresses: dict[int, dict[tuple[int, int], str]] = {}
        self._watched: set[tuple[int, int, int, str, int]] = set()
        self._unreachable: set[int] = set()  # jobs whose backend did not answer (said once)
        self._probing: dict[tuple[int, int, int, int], asyncio.Task[None]] = {}
        # Why the state directory cannot be written ("disk full", ...) and since when, and the
        # jobs waiting on it; None while writes succeed (`_cannot_write`, `_writable`).
        self.unwritable: tuple[str, float] | None = None
        self._blocked: set[int] = set()
        self.started_at = time.time()

    # ---- life -------------------------------------------------------------------------------

    def serve(self) -> None:
        """Run until SIGTERM/SIGINT or `controller stop`. The lock must already be held."""
        # We hold the lock: socket files left by a controller that was killed are stale.
        for name in (sockname.WAKE, sockname.RPC):
            (self.home / name).unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # who sent each datagram
        rpc = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with sockname.address(self.home, sockname.WAKE) as addr:
            sock.bind(addr)
        with sockname.address(self.home, sockname.RPC) as addr:
            rpc.bind(addr)
        rpc.listen(128)
        self.loop.add_reader(sock.fileno(), self._on_wake, sock)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.loop.stop)
        self.loop.add_signal_handler(signal.SIGCHLD, self._reap_children)
        self.loop.run_until_complete(asyncio.start_unix_server(
            self._serve_rpc, sock=rpc, limit=4 << 20))
        self.adopt()
        self.loop.call_later(SWEEP_SECONDS, self._sweep)
        log.info("controller %d serving %s", os.getpid(), self.home)
        try:
            self.loop.run_forever()
        finally:
            sock.close()
            rpc.close()
            for name in (sockname.WAKE, sockname.RPC):
                (self.home / name).unlink(missing_ok=True)
            log.info("controller %d stopped; running groups are left running", os.getpid())

    async def _serve_rpc(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        """One request per connection (see `controller.rpc`). Only this controller's own user
        (or root) may ask: the state directory's mode keeps others out, and the peer's
        credentials are checked as well."""
        try:
            if not creds.peer_allowed(writer.get_extra_info("socket")):
                # Read (and ignore) the request first: closing on a client that is still
                # sending would give it a broken pipe instead of this answer.
                try:
                    await asyncio.wait_for(reader.readline(), timeout=2.0)
                except (asyncio.TimeoutError, ValueError, OSError):
                    pass
                answer = {"ok": False, "error": "permission denied: the controller only takes "
                          "requests from its own user", "exit_code": 2}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
                writer.close()
                return
            line = await reader.readline()
            req = json.loads(line)
            from jobgroup.controller import operate

            if isinstance(req, dict) and req.get("op") in operate.OPS:
                from jobgroup.controller.sockname import peer_uid

                answer = await operate.answer(self, req, peer_uid(writer.get_extra_info("socket")))
            else:
                answer = self._launch_for_client(req)
        except Exception as e:  # never let a client's request take the controller down
            log.exception("rpc request failed")
            answer = {"ok": False, "error": f"the controller could not launch: {e}",
                      "exit_code": 1}
        writer.write(json.dumps(answer).encode() + b"\n")
        try:
            await writer.drain()
        finally:
            writer.close()

    def _launch_for_client(self, req: dict) -> dict:
        """Answer one RPC request: `status`, or `launch` (validated and recorded as
        `api.launch` does, through `submit.record`, and started in this turn of the loop)."""
        if req.get("op") == "status":
            since = self.unwritable[1] if self.unwritable else None
            return {"ok": True, "pid": os.getpid(), "started_at": self.started_at,
                    "unwritable": self.unwritable[0] if self.unwritable else None,
                    "unwritable_since": since, "blocked_jobs": sorted(self._blocked)}
        if req.get("op") != "launch":
            return {"ok": False, "error": f"unknown request {req.get('op')!r}", "exit_code": 2}
        from jobgroup import launchreq, submit

        notes: list[str] = []
        try:
            request = launchreq.from_wire(req)
            job_id = submit.record(request.path, request, home=self.home, store=self.store,
                                   on_warning=notes.append)
        except JobGroupError as e:
            return {"ok": False, "error": str(e), "exit_code": e.exit_code, "warnings": notes}
        self._mark(job_id)  # starts in this very turn of the loop
        infra = self._backend(job_id).name
        level = self.backends["local"].level if infra == "local" else infra
        from jobgroup.backends.local.isolation import LEVEL_NOTES

        rec = self.store.job(job_id)
        job = {"id": job_id, "name": rec.name if rec else "", "status": "PENDING",
               "tasks": [{"index": t.idx, "name": t.name, "num_nodes": t.num_nodes}
                         for t in self.store.tasks(job_id)]}
        return {"ok": True, "job": job, "warnings": notes, "isolation": level,
                "isolation_note": LEVEL_NOTES.get(level)}

    def adopt(self) -> None:
        """Watch every phase that still runs; settle every one that ended while we were away."""
        for job in self.store.jobs(active_only=True):
            for n in self.store.nodes(job.id):
                if n.live:
                    self._watch(job.id, n)
            self._mark(job.id)

    def _sweep(self) -> None:
        for job in self.store.jobs(active_only=True):
            self._mark(job.id)
        self.loop.call_later(SWEEP_SECONDS, self._sweep)

    def _reap_children(self) -> None:
        """SIGCHLD: each backend collects the children it started that ended (`Backend.reap`:
        the local shim runner's shims, keeping each one's exit code). Never a blanket
        waitpid(-1): the controller's other children — kubectl log followers and probes, run
        as asyncio subprocesses — are reaped by asyncio, whose watcher must get their
        statuses ("Unknown child process pid N")."""
        for backend in {id(b): b for b in self.backends.values()}.values():
            backend.reap()

    def _on_wake(self, sock: socket.socket) -> None:
        while True:
            try:
                data, anc, _, _ = sock.recvmsg(512, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return
            msg = data.decode(errors="replace").split()
            if msg[:1] == ["stop"] and not creds.sender_allowed(anc):
                log.warning("ignored a stop request from another user")
                continue
            if msg[:1] == ["job"] and len(msg) >= 2 and all(m.isdigit() for m in msg[1:]):
                for m in msg[1:]:
                    self._mark(int(m))
            elif msg[:1] == ["ping"]:
                continue
            elif msg[:1] == ["stop"]:
                self.loop.stop()
            else:
                for job in self.store.jobs(active_only=True):
                    self._mark(job.id)

    # ---- reconcile --------------------------------------------------------------------------

    def _mark(self, job_id: int) -> None:
        self._dirty.add(job_id)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._run_dirty)

    def _run_dirty(self) -> None:
        self._scheduled = False
        try:
            self._admit()
        except Exception:
            log.exception("admission pass failed")
        dirty, self._dirty = self._dirty, set()
        for job_id in sorted(dirty):
            try:
                self.reconcile(job_id)
                self._unreachable.discard(job_id)
                self._writable(job_id)
            except Unreachable as e:  # the cluster's API did not answer: keep state, retry
                if job_id not in self._unreachable:  # said once per outage, not every retry
                    self._unreachable.add(job_id)
                    what = f"cannot reach {self._backend(job_id).name.capitalize()}: {e}"
                    log.warning("job %d: %s; retrying every %gs", job_id, what,
                                RETRY_UNREACHABLE)
                    self.store.add_event(job_id, "unreachable", f"{what}; retrying")
                self.loop.call_later(RETRY_UNREACHABLE, self._mark, job_id)
            except StateUnwritable as e:  # disk full / read-only: keep state, try again
                self._cannot_write(job_id, e)
                self.loop.call_later(RETRY_UNREACHABLE, self._mark, job_id)
            except Exception as e:
                why = unwritable_reason(self.home, e)
                if why is None:  # one broken job must not stop the others
                    log.exception("reconcile of job %d failed", job_id)
                    self._fail_job(job_id, e)
                else:  # e.g. a log directory on a file system turned read-only
                    self._cannot_write(job_id, StateUnwritable(
                        f"cannot write state in {self.home}: {why} ({e})"))
                    self.loop.call_later(RETRY_UNREACHABLE, self._mark, job_id)
        self._scan_intents()
        if self._freed:  # a group ended: what it held may admit a waiting one
            self._freed = False
            try:
                self._admit()
            except Exception:
                log.exception("admission pass failed")

    def _cannot_write(self, job_id: int, error: StateUnwritable) -> None:
        """Job `job_id` could not record a change: said once per outage in controller.log and
        by `jobgroup controller status`; the job keeps its state and is tried again."""
        if self.unwritable is None:
            log.error("%s; nothing is recorded until it can be (retrying every %gs)", error,
                      RETRY_UNREACHABLE)
            self.unwritable = (str(error), time.time())
        self._blocked.add(job_id)

    def _writable(self, job_id: int) -> None:
        if job_id in self._blocked:
            self._blocked.discard(job_id)
            if not self._blocked and self.unwritable is not None:
                log.info("the state directory can be written again")
                self.unwritable = None

    def _backend(self, job_id: int) -> Backend:
        """The backend of a job (its launch-time infra and target: one object per Kubernetes
        cluster and context its launches named, see `registry.Target`), created on first
        use."""
        key = self._backend_key.get(job_id)
        if key is None:
            from jobgroup.backends import registry

            job = self.store.job(job_id)
            key = "local"
            if job is not None:
                target = registry.launch_target(job.launch)
                key = registry.key(job.launch.infra, target)
                if key not in self.backends:
                    backend = registry.create(job.launch.infra, self.home, target)
                    backend.jobs = self.jobs
                    self.backends[key] = backend
            self._backend_key[job_id] = key
        return self.backends[key]

    def _admit_self_scheduled(self, job: JobRec, group: JobGroup, backend: Backend) -> None:
        """Ask a backend with its own scheduler (Slurm, Kubernetes) about a pending group."""
        try:
            adm = backend.admit(_context(job, group))
        except Unreachable as e:
            transitions.set_pending_reason(
                self.store, job.id, f"cannot reach {backend.name.capitalize()}: {e}")
            self.loop.call_later(RETRY_UNREACHABLE, self._mark, job.id)
            return
        except Refused as e:  # e.g. forbidden by the cluster's RBAC: say so
            log.warning("job %d: %s refused the group: %s", job.id, backend.name, e)
            reason = f"{backend.name.capitalize()} refused the group: {e}"
            for t in self.store.tasks(job.id):
                transitions.set_task_status(self.store, job.id, t.idx, Status.FAILED_PRECHECKS,
                                            reason)
            transitions.set_job_status(self.store, job.id, Status.FAILED_PRECHECKS, reason)
            return
        except Exception as e:  # not the cluster's answer: this group fails, not the pass
            why = unwritable_reason(self.home, e)
            if why is not None:  # e.g. its batch script cannot be written: keep it, try again
                self._cannot_write(job.id, e if isinstance(e, StateUnwritable) else
                                   StateUnwritable(f"cannot write state in {self.home}: {why} "
                                                   f"({e})"))
                self.loop.call_later(RETRY_UNREACHABLE, self._mark, job.id)
                return
            log.exception("job %d: asking %s to admit the group failed", job.id, backend.name)
            self._fail_job(job.id, e)
            return
        if adm.facts:
            self.store.record_facts(job.id, adm.facts)
        if adm.state == "ready":
            self.store.update_controller(job.id, admitted=True)
            self.store.add_event(job.id, "admitted", adm.reason)
            self._mark(job.id)
        elif adm.state == "failed":
            for t in self.store.tasks(job.id):
                transitions.set_task_status(self.store, job.id, t.idx,
                                            Status.FAILED_NO_RESOURCE, adm.reason)
            transitions.set_job_status(self.store, job.id, Status.FAILED_NO_RESOURCE, adm.reason)
        else:
            transitions.set_pending_reason(self.store, job.id, adm.reason)
            # Slurm has no push: poll, briskly at first (most groups start within a second or
            # two of submission), then gently.
            waited = time.time() - job.submitted_at
            self.loop.call_later(0.1 if waited < 5 else 0.5 if waited < 60 else 2.0,
                                 self._mark, job.id)

    # ---- admission ----------------------------------------------------------------------------

    def _admit(self) -> None:
        """One admission pass over every active job: a pure plan (`admitplan.plan_admission`:
        FIFO + backfill on this machine, the cluster's word for self-scheduled backends),
        then applied here."""
        from jobgroup.controller.admitplan import JobInput, plan_admission

        inputs = []
        for job in self.store.jobs(active_only=True):
            group, _ = self._spec(job.id, job.spec)
            serial = group.execution == "serial" and len(group.tasks) > 1
            inputs.append(JobInput(
                job=job, group=group,
                self_scheduled=self._backend(job.id).capabilities.self_scheduling,
                tasks=tuple(self.store.tasks(job.id)) if serial and job.status != Status.PENDING
                else ()))
        plan = plan_admission(inputs, self.inventory)
        by_id = {i.job.id: i for i in inputs}
        for job_id in plan.ask_backend:
            inp = by_id[job_id]
            self._admit_self_scheduled(inp.job, inp.group, self._backend(job_id))
        for a in plan.admit:
            p = a.placement
            self.store.update_controller(a.job_id, placement=msgspec.to_builtins(p),
                                      placement_step=a.step)
            held = [n for n in p.nodes if not n.best_effort]
            self.store.add_event(a.job_id, "admitted", placements.describe_placement(p) if held else
                                 "best-effort: reserves nothing")
            self._mark(a.job_id)
        for w in plan.wait:
            transitions.set_pending_reason(self.store, w.job_id, w.reason)
        for f in plan.fail:
            if f.pending:
                for t in self.store.tasks(f.job_id):
                    transitions.set_task_status(self.store, f.job_id, t.idx,
                                                Status.FAILED_NO_RESOURCE, f.reason)
                transitions.set_job_status(self.store, f.job_id, Status.FAILED_NO_RESOURCE,
                                           f.reason)
            else:  # a later pipeline step can never fit: wind the job down with that reason
                self.store.set_job_facts(f.job_id, outcome=Status.FAILED_NO_RESOURCE,
                                         outcome_reason=f.reason)
                self._mark(f.job_id)

    def _scan_intents(self) -> None:
        """Jobs whose intent no wake-up announced (a wake can be dropped while we are busy):
        new jobs never looked at, and cancels not acted on yet. One indexed query a pass."""
        for job_id in self.store.unseen_intents(self._seen_up_to):
            self._seen_up_to = max(self._seen_up_to, job_id)
            if job_id not in self._dirty:
                self._mark(job_id)
        # A cancel of a group winding down (auxiliaries in their termination_delay): looked
        # at once, not at every pass while its nodes stop.
        late = set(self.store.cancels_while_winding_down())
        for job_id in late - self._late_cancels:
            self._mark(job_id)
        self._late_cancels = late

    def _fail_job(self, job_id: int, error: BaseException | None = None) -> None:
        """End a job FAILED_CONTROLLER after an unexpected error (its text in the reason)."""
        why = f": {error}" if error is not None and str(error) else ""
        try:
            for n in self.store.nodes(job_id):
                if n.live and n.handle:
                    self._backend(job_id).stop(_ref(job_id, n), n.handle, kill=True)
            reason = f"the controller hit an error{why}; see controller.log"
            transitions.set_job_status(self.store, job_id, Status.FAILED_CONTROLLER, reason)
            # Its tasks end with it: a task left STARTING would keep `logs` following forever.
            for t in self.store.tasks(job_id):
                if not t.status.terminal:
                    transitions.set_task_status(self.store, job_id, t.idx,
                                                Status.FAILED_CONTROLLER, reason)
        except Exception:
            log.exception("could not fail job %d", job_id)
        try:  # a terminal job is never reconciled again: tear its network down now
            self._backend(job_id).cleanup(job_id)
        except Exception:
            log.exception("could not clean up after job %d", job_id)

    def reconcile(self, job_id: int) -> None:
        for _ in range(MAX_ROUNDS):
            job = self.store.job(job_id)
            if job is None or job.status.terminal:
                self._forget(job_id)
                return
            group, info = self._spec(job_id, job.spec)
            placement = placements.placement_of(job)
            placed: frozenset[int] = frozenset()
            if job.controller.admitted:  # by a backend with its own scheduler
                placed = frozenset(range(len(group.tasks)))
            elif placement is not None:
                placed = frozenset(range(len(group.tasks))) if group.execution == "parallel" \
                    else frozenset({job.controller.placement_step})
            max_group_restarts = group.max_group_restarts
            if job.facts.get("cluster_recovery"):
                # The cluster restarts nodes and the group itself (Kubernetes JobSet: the
                # Job's podFailurePolicy/backoffLimit, the JobSet's failurePolicy, rendered
                # from the same spec); a failure its backend reports is final.
                info = [dataclasses.replace(i, max_restarts=0, recover_codes=frozenset(),
                                            recover_preemption=False) for i in info]
                max_group_restarts = 0
            view = JobView(job=job, tasks=self.store.tasks(job_id),
                           nodes=self.store.nodes(job_id), info=info,
                           max_group_restarts=max_group_restarts, placed=placed)
            for n in view.nodes:
                if n.live and (job_id, n.task_idx, n.rank, n.phase.value,
                               n.attempt) not in self._watched:
                    # Recorded as running but watched by nobody (a start that failed halfway,
                    # a watch lost to an error): find it, or put it back to be started.
                    self._watch(job_id, n)
                self._probe_if_needed(job, group, n)
            plan = decide(view, time.time())
            self._set_timer(job_id, plan)
            if not plan.actions:
                return
            starts = [a for a in plan.actions if isinstance(a, StartPhase)]
            for action in plan.actions:
                if not isinstance(action, StartPhase):
                    self._apply(job_id, group, view, action)
            if starts:
                self._start(job_id, group, view, starts)
        self._mark(job_id)  # not converged yet: continue on the next loop turn

    def _set_timer(self, job_id: int, plan: Plan) -> None:
        old = self._timers.pop(job_id, None)
        if old:
            old.cancel()
        if plan.wake_at is not None:
            delay = max(0.0, plan.wake_at - time.time())
            self._timers[job_id] = self.loop.call_later(delay, self._mark, job_id)

    def _forget(self, job_id: int) -> None:
        self._specs.pop(job_id, None)
        self._addresses.pop(job_id, None)
        timer = self._timers.pop(job_id, None)
        if timer:
            timer.cancel()

    def _spec(self, job_id: int, text: str) -> tuple[JobGroup, list[TaskInfo]]:
        cached = self._specs.get(job_id)
        if cached is None:
            group = load(text)
            info = [task_info(group, t) for t in group.tasks]
            cached = self._specs[job_id] = (group, info)
        return cached

    # ---- actions ----------------------------------------------------------------------------

    def _apply(self, job_id: int, group: JobGroup, view: JobView, action: object) -> None:
        now = time.time()
        match action:
            case MarkReady(task_idx, rank):
                self.store.update_node(job_id, task_idx, rank, phase=Phase.READY)
            case StopNode(task_idx, rank, reason):
                node = next(n for n in view.nodes if (n.task_idx, n.rank) == (task_idx, rank))
                if node.handle:  # first: if the backend cannot be reached, nothing is recorded
                    self._backend(job_id).stop(_ref(job_id, node), node.handle)
                faults.hit("stop.signalled")
                self.store.update_node(job_id, task_idx, rank, stop_requested_at=now)
                self.store.add_event(job_id, "stop", reason, task_idx, rank)
            case Abandon(task_idx, rank):
                self.store.update_node(job_id, task_idx, rank, phase=Phase.ENDED, stopped=1,
                                       ended_at=now)
            case SetTask(idx, status, reason):
                transitions.set_task_status(self.store, job_id, idx, status, reason)
                if status.terminal and view.job.execution == "serial":
                    self._freed = True  # the next step of a pipeline may need admission
            case SetOutcome(status, reason, primaries_done):
                facts: dict[str, object] = {"outcome": status, "outcome_reason": reason}
                if primaries_done:
                    facts["primaries_done_at"] = now
                self.store.set_job_facts(job_id, **facts)
                self.store.add_event(job_id, "outcome", f"{status.value}: {reason}")
            case SetJob(status, reason):
                if status.terminal:
                    faults.hit("teardown.begin")
                    notes = self._backend(job_id).cleanup(job_id)  # local: what nodes wrote
                    for task_idx, rank, note in notes or ():
                        self.store.add_event(job_id, "disk", note, task_idx, rank)
                    faults.hit("teardown.cleaned")
                    self._freed = True
                transitions.set_job_status(self.store, job_id, status, reason)
            case RestartTask(idx, reason, error):
                # Counted with the status change (one transaction): never twice after a crash.
                transitions.restart_task(self.store, job_id, idx, reason, error=error)
                faults.hit("restart.counted")
            case ResetTask(idx):
                nodes = [n for n in view.nodes if n.task_idx == idx]
                # The attempt follows from the restarts counted (not +1 on what is stored), so
                # resetting again after a crash before STARTING is recorded changes nothing.
                task = next(t for t in view.tasks if t.idx == idx)
                self.store.record(job_id, nodes=[
                    (idx, n.rank, {"phase": Phase.READY,
                                   "attempt": max(task.restarts + 1, n.attempt), "handle": None,
                                   "exit_code": None, "signal": None,
                                   "stopped": 0, "stop_requested_at": None, "ended_at": None,
                                   "ended_phase": None, "ready_at": None, "probe_failed": None,
                                   "started_at": None})
                    for n in nodes
                ], events=[(idx, n.rank, "restart",
                            f"attempt {max(task.restarts + 1, n.attempt)}") for n in nodes])
                faults.hit("restart.reset")
                transitions.set_task_status(self.store, job_id, idx, Status.STARTING,
                                            "restarted")
            case RestartGroup(reason):
                transitions.restart_group(self.store, job_id, reason)  # counted with it
                faults.hit("restart.group")
            case _:
                raise TypeError(f"unknown action {action!r}")

    def _addresses_of(self, job: JobRec, group: JobGroup) -> dict[tuple[int, int], str]:
        job_id = job.id
        addrs = self._addresses.get(job_id)
        if addrs is None:
            backend = self._backend(job_id)
            addrs = backend.prepare(_context(job, group))
            self.store.set_job_facts(job_id, isolation=backend.level)
            self._addresses[job_id] = addrs
            topo = paths.topology_path(self.home, job_id)
            topo.parent.mkdir(parents=True, exist_ok=True)
            tmp = topo.with_suffix(".tmp")
            tmp.write_text(json.dumps(discovery.topology(group, job_id, addrs), indent=2))
            os.replace(tmp, topo)
            self.store.record(job_id, nodes=[
                (t, r, {"address": a, "hostname": discovery.hostname(group.tasks[t].name or "", r)})
                for (t, r), a in addrs.items()
            ])
        return addrs

    def _start(self, job_id: int, group: JobGroup, view: JobView,
               starts: list[StartPhase]) -> None:
        """Start many phases: one commit for the intents, spawn all, one commit for the handles."""
        job = view.job
        addrs = self._addresses_of(job, group)
        nodes = {(n.task_idx, n.rank): n for n in view.nodes}
        now = time.time()
        # Record the intents before acting, so a crash in between is visible on restart.
        self.store.record(job_id, nodes=[
            (s.task_idx, s.rank, {"phase": s.phase, "handle": None, "started_at": now})
            for s in starts
        ])
        faults.hit("start.intent")
        started: list[NodeRec] = []
        try:
            self._start_each(job_id, group, job, nodes, addrs, starts, started)
        except (Unreachable, StateUnwritable, OSError):
            # Record what did start; put the rest back to be started on the retry (if even
            # that cannot be written, `reconcile` finds them unwatched and does it later).
            done = {(n.task_idx, n.rank) for n in started}
            try:
                self.store.record(job_id, nodes=[
                    (s.task_idx, s.rank, {"phase": Phase.WAITING if s.phase == Phase.SETUP
                                          else Phase.READY, "started_at": None})
                    for s in starts if (s.task_idx, s.rank) not in done
                ])
            except StateUnwritable:
                pass
            raise
        finally:
            backend = self._backend(job_id)
            try:
                self.store.record(
                    job_id,
                    nodes=[(n.task_idx, n.rank, {"handle": n.handle}) for n in started],
                    events=[(n.task_idx, n.rank, f"{n.phase.value}-started",
                             backend.describe(n.handle or {})) for n in started],
                )
                faults.hit("start.recorded")
            finally:
                # Watched even when their handles could not be written (a full disk): their
                # ends are then held in memory until they can be (`_record_end`); a restarted
                # controller finds them through the backend (`recover`).
                for n in started:
                    self._watch(job_id, n)

    def _start_each(self, job_id: int, group: JobGroup, job: JobRec,
                    nodes: dict[tuple[int, int], NodeRec], addrs: dict[tuple[int, int], str],
                    starts: list[StartPhase], started: list[NodeRec]) -> None:
        """Start each phase in `starts`, appending what started to `started` (so that the
        caller records it even when a later start fails)."""
        opts = job.launch
        for s in starts:
            task = group.tasks[s.task_idx]
            node = nodes[(s.task_idx, s.rank)]
            setup = s.phase == Phase.SETUP
            env = self._env(job, group, s.task_idx, s.rank, addrs, setup=setup,
                            attempt=node.attempt)
            # As SkyPilot runs it: ~/.bashrc in an interactive bash, then the task's variables
            # again (nodescript.py). Without a script nothing runs, as in SkyPilot.
            raw = task.setup if setup else task.run
            script = nodescript.compose(raw, setup=setup, keep=[
                *task.envs, *task.secrets, *opts.env]) if raw else "true"
            handle = self._backend(job_id).start(PhaseLaunch(
                ref=NodeRef(job_id, s.task_idx, s.rank, s.phase.value, node.attempt),
                task=task.name or "", script=script, env=env,
                workdir=_workdir(job.base_dir, task.workdir) or str(
                    paths.node_dir(self.home, job_id, task.name or "", s.rank)),
                log_path=paths.log_path(self.home, job_id, task.name or "", s.rank, node.attempt),
                grace=opts.grace,
                log_max=opts.log_max,
                **placements.limits(job, s.task_idx, s.rank),
            ))
            faults.hit("start.spawned")
            started.append(NodeRec(**{**_fields(node), "phase": s.phase, "handle": handle}))

    def _env(self, job: JobRec, group: JobGroup, task_idx: int, rank: int,
             addrs: dict[tuple[int, int], str], *, setup: bool = False,
             attempt: int = 1) -> dict[str, str]:
        """A node's environment: the launcher's, minus our state dir, plus discovery."""
        base = job.launch.base_env
        env = dict(base) if base is not None else inherited(os.environ)
        env.pop("JOBGROUP_HOME", None)
        env.update(discovery.node_env(
            group, job.id, task_idx, rank, addrs,
            topology_path=str(paths.topology_path(self.home, job.id)),
            overrides=job.launch.env, setup=setup,
            user=env.get("USER") or _user_name(), infra=self._backend(job.id).name,
            submitted_at=job.submitted_at,  # SKYPILOT_TASK_ID's time: stable across restarts
        ))
        env["JOBGROUP_ATTEMPT"] = str(attempt)
        alloc = placements.node_alloc(job, task_idx, rank)
        if alloc is not None:
            env.update(alloc.env())  # CUDA_VISIBLE_DEVICES, SKYPILOT_NUM_GPUS_PER_NODE
        if setup:
            # As SkyPilot runs setup (`unset CUDA_VISIBLE_DEVICES;`): absent, not empty. Setup
            # scripts test for exactly that; locally it shows every GPU of the machine, which
            # setup (installs, builds) is not meant to use.
            env.pop("CUDA_VISIBLE_DEVICES", None)
        return env

    def _probe_if_needed(self, job: JobRec, group: JobGroup, n: NodeRec) -> None:
        task = group.tasks[n.task_idx]
        key = (job.id, n.task_idx, n.rank, n.attempt)
        if (task.readiness_probe is None or n.phase != Phase.RUN or n.ready_at is not None
                or n.probe_failed or key in self._probing):
            return
        addrs = self._addresses_of(job, group)
        # Keep a strong reference: the loop holds tasks only weakly.
        self._probing[key] = self.loop.create_task(self._probe(job, group, n, addrs))
        self._probing[key].add_done_callback(lambda _: self._probing.pop(key, None))

    async def _probe(self, job: JobRec, group: JobGroup, n: NodeRec,
                     addrs: dict[tuple[int, int], str]) -> None:
        """Probe one node until it passes, gives up, or stops running; record the result."""
        probe = group.tasks[n.task_idx].readiness_probe
        assert probe is not None
        address = addrs[(n.task_idx, n.rank)]
        timeout = parse_duration(probe.timeout)
        interval = parse_duration(probe.interval)
        env = None
        backend = self._backend(job.id)
        ref = NodeRef(job.id, n.task_idx, n.rank, Phase.RUN.value, n.attempt)
        if probe.command is not None:
            env = self._env(job, group, n.task_idx, n.rank, addrs, attempt=n.attempt)
        what = probes.describe(probe, address)
        await asyncio.sleep(parse_duration(probe.initial_delay))
        failures, why = 0, ""
        while True:
            cur = next((m for m in self.store.nodes(job.id)
                        if (m.task_idx, m.rank) == (n.task_idx, n.rank)), None)
            if cur is None or cur.phase != Phase.RUN or cur.attempt != n.attempt:
                return  # ended or restarted meanwhile
            native = None
            if probe.command is None and backend.capabilities.native_readiness:
                try:  # the backend's cluster probes it (a blocking call)
                    native = await self.loop.run_in_executor(None, backend.node_ready, ref)
                except Unreachable:  # unknown: ask again later, it is no failed attempt
                    await asyncio.sleep(max(interval, RETRY_UNREACHABLE))
                    continue
            if native is None and probe.command is not None:
                # Asked afresh each time: the node's processes (whose namespaces a local
                # probe joins, or the pod it execs into) change as it starts and restarts.
                argv = await self.loop.run_in_executor(
                    None, backend.exec_argv, ref, ["/bin/bash", "-c", probe.command])
                if argv is None:  # not started yet (or just ended): no failed attempt
                    await asyncio.sleep(interval)
                    continue
                ok, why = await probes.probe_once(probe, address, timeout, argv, env)
            elif native is None:
                ok, why = await probes.probe_once(probe, address, timeout, None, env)
            else:
                ok, why = native, "the pod's readinessProbe has not passed"
            if ok:
                self.store.record(job.id, nodes=[(n.task_idx, n.rank, {"ready_at": time.time()})],
                                  events=[(n.task_idx, n.rank, "ready", what)])
                self._mark(job.id)
                return
            failures += 1
            if failures >= probe.failure_threshold:
                reason = f"{what} failed {failures} times (last: {why})"
                self.store.record(job.id, nodes=[(n.task_idx, n.rank, {"probe_failed": reason})],
                                  events=[(n.task_idx, n.rank, "probe-failed", reason)])
                self._mark(job.id)
                return
            await asyncio.sleep(interval)

    def _watch(self, job_id: int, n: NodeRec) -> None:
        key = (job_id, n.task_idx, n.rank, n.phase.value, n.attempt)
        if key in self._watched:
            return
        self._watched.add(key)
        ref = _ref(job_id, n)
        backend = self._backend(job_id)
        handle = n.handle
        if handle is None:
            # Started but not recorded: the previous controller died in between.
            found = backend.recover(ref)
            if found is None:  # it never started: start it again
                back = Phase.WAITING if n.phase == Phase.SETUP else Phase.READY
                self.store.record(
                    job_id, nodes=[(n.task_idx, n.rank, {"phase": back})],
                    events=[(n.task_idx, n.rank, "note",
                             f"its {n.phase.value} was never started (the controller "
                             "stopped before it could); starting it now")])
                self._watched.discard(key)
                self._mark(job_id)
                return
            if found is not ENDED:  # found running: record it, or stopping it would miss it
                handle = found
                try:
                    self.store.record(
                        job_id, nodes=[(n.task_idx, n.rank, {"handle": handle})],
                        events=[(n.task_idx, n.rank, f"{n.phase.value}-started",
                                 f"{backend.describe(handle)} (found after a controller "
                                 "restart)")])
                except StateUnwritable as e:
                    self._cannot_write(job_id, e)

        def ended() -> None:
            self._watched.discard(key)
            self._settle(job_id, n, handle)

        if handle is None:
            self.loop.call_soon(ended)
        else:
            backend.watch(self.loop, ref, handle, ended)

    def _settle(self, job_id: int, n: NodeRec, handle: Handle | None) -> None:
        """The phase `n` was in has ended: record how, then reconcile the job."""
        try:
            out = self._backend(job_id).outcome(_ref(job_id, n), handle)
        except Unreachable:  # the cluster did not answer: ask again, the node is not lost
            self.loop.call_later(RETRY_UNREACHABLE, self._settle, job_id, n, handle)
            return
        except Exception as e:  # a callback: an escaping error would leave the node unwatched
            why = unwritable_reason(self.home, e)
            if why is None:
                log.exception("job %d: reading how %s-%d ended failed", job_id,
                              n.task_idx, n.rank)
                self._fail_job(job_id, e)
                return
            self._cannot_write(job_id, e if isinstance(e, StateUnwritable) else StateUnwritable(
                f"cannot write state in {self.home}: {why} ({e})"))
            self.loop.call_later(RETRY_UNREACHABLE, self._settle, job_id, n, handle)
            return
        if out is None:  # still running after all (spurious wake-up): keep watching
            self._watch(job_id, n)
            return
        faults.hit("settle.read")
        self._record_end(job_id, n, out, time.time())

    def _record_end(self, job_id: int, n: NodeRec, out: Outcome, now: float) -> None:
        """Write how phase `n` ended, in one transaction (the event with the facts). While the
        state directory cannot be written (full, read-only), the outcome is kept here and
        written when it can be: it was read once (the shim's exit code cannot be read twice)
        and is never replaced by a guess."""
        cur = next((m for m in self.store.nodes(job_id)
                    if (m.task_idx, m.rank) == (n.task_idx, n.rank)), None)
        if cur is None or cur.phase != n.phase or cur.attempt != n.attempt:
            return  # already settled
        what = ("lost (its supervisor was killed)" if out.lost else
                f"signal {out.signal}" if out.signal is not None else f"exit code {out.exit_code}")
        events: list[tuple[int | None, int | None, str, str]] = [
            (n.task_idx, n.rank, f"{n.phase.value}-ended", what)]
        if n.phase == Phase.SETUP and out.exit_code == 0 and not out.stopped:
            fields: dict[str, object] = {"phase": Phase.READY, "handle": None}
        else:
            stopped = out.stopped or cur.stop_requested_at is not None
            fields = {"phase": Phase.ENDED, "exit_code": out.exit_code, "signal": out.signal,
                      "stopped": int(stopped), "ended_at": now, "ended_phase": n.phase,
                      "note": out.note}
            if out.note:
                events.append((n.task_idx, n.rank, "note", out.note))
        try:
            self.store.record(job_id, nodes=[(n.task_idx, n.rank, fields)], events=events)
        except StateUnwritable as e:
            self._cannot_write(job_id, e)
            self.loop.call_later(RETRY_UNREACHABLE, self._record_end, job_id, n, out, now)
            return
        self._mark(job_id)


def _user_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _fields(n: NodeRec) -> dict[str, object]:
    return {f: getattr(n, f) for f in n.__struct_fields__}


def _ref(job_id: int, n: NodeRec) -> NodeRef:
    """The phase node `n` is in (setup or run), as backends name it."""
    return NodeRef(job_id, n.task_idx, n.rank, n.phase.value, n.attempt)


def _context(job: JobRec, group: JobGroup) -> JobContext:
    return JobContext(job_id=job.id, group=group, options=job.options,
                      base_dir=Path(job.base_dir), submitted_at=job.submitted_at,
                      launch=job.launch, facts=job.facts)


class BackendJobs:
    """What the controller tells its backends about jobs they were not handed (`base.Jobs`):
    read with a connection of its own each time (a backend may ask from a worker thread; it
    asks rarely: after a controller restart, or when another job holds a name it needs)."""

    def __init__(self, home: Path, specs: dict[int, tuple[JobGroup, list[TaskInfo]]]) -> None:
        self.home = home
        self._specs = specs  # the controller's parsed specs, by job id

    def _job(self, job_id: int) -> JobRec | None:
        store = Store(self.home)
        try:
            return store.job(job_id)
        finally:
            store.close()

    def context(self, job_id: int) -> JobContext | None:
        job = self._job(job_id)
        if job is None:
            return None
        cached = self._specs.get(job_id)
        return _context(job, cached[0] if cached else load(job.spec))

    def state(self, job_id: int) -> str:
        job = self._job(job_id)
        if job is None:
            return "unknown"
        if job.status.terminal:
            return "ended"
        if job.cancel_requested or job.status == Status.CANCELLING:
            return "ending"
        return "live"

    def outcome(self, job_id: int) -> str | None:
        job = self._job(job_id)
        fate = job.outcome if job is not None else None
        return fate.value if fate is not None else None


def _workdir(base_dir: str, workdir: object) -> str | None:
    if not isinstance(workdir, str) or not workdir:
        return None
    p = Path(os.path.expanduser(workdir))
    return str(p if p.is_absolute() else Path(base_dir) / p)


# ---- process entry ------------------------------------------------------------------------------


def acquire_lock(home: Path) -> int | None:
    """The controller lock's fd if we got it, None if another controller holds it. The state
    directory is made private first (`ensure_private`; UsageError if it cannot be)."""
    from jobgroup.home import ensure_private

    ensure_private(home)
    fd = os.open(paths.lock_path(home), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _write_quietly(path: Path, text: str) -> None:
    """Write a file that only informs commands (pid, isolation level, inventory) atomically;
    on a full or read-only state directory say so in the log and go on: supervising the
    groups that run matters more (the lock, not the pid file, says a controller runs)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        log.error("cannot write %s: %s", path, e.strerror or e)
        for stale in (tmp, path):  # an old pid file would name a dead controller
            try:
                stale.unlink(missing_ok=True)
            except OSError:
                pass


def _raise_fd_limit() -> None:
    """One pidfd per running phase: lift the soft open-files limit to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            log.warning("could not raise the open-files limit above %d", soft)


def main(argv: list[str] | None = None) -> int:
    """`python -m jobgroup.controller.daemon HOME`: serve HOME until stopped."""
    args = sys.argv[1:] if argv is None else argv
    home = Path(args[0]).absolute()
    try:
        faults.arm_from_env()  # crash-safety tests only (see jobgroup.faults)
    except faults.FaultSpecError as e:
        print(f"jobgroup controller: {e}", file=sys.stderr)
        return 2
    try:
        lock = acquire_lock(home)
    except (JobGroupError, OSError) as e:  # not ours, not a directory, read-only, ...
        print(f"jobgroup controller: {e}", file=sys.stderr)
        return 1
    if lock is None:
        return 0  # another controller serves this state directory
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
        filename=paths.controller_log(home),
    )
    try:
        from jobgroup.backends.local.backend import LocalBackend

        backend = LocalBackend(home)
    except Exception as e:  # e.g. no C compiler for the shim: say why, in the log
        log.error("cannot start the local backend: %s", e)
        return 1
    _raise_fd_limit()
    # From here on every file the controller makes is its user's alone (the backend noted the
    # umask nodes get: the one of whoever started the controller).
    os.umask(0o077)
    _write_quietly(home / "isolation", backend.level + "\n")
    try:
        controller = Controller(home, backend)
    except JobGroupError as e:  # e.g. a bad resources.yaml: say why, in the log
        log.error("cannot start: %s", e)
        return 1
    _write_quietly(home / "inventory.json", msgspec.json.encode(controller.inventory).decode())
    _write_quietly(paths.pid_path(home), f"{os.getpid()} {time.time()}\n")
    try:
        controller.serve()
    finally:
        paths.pid_path(home).unlink(missing_ok=True)
        os.close(lock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
