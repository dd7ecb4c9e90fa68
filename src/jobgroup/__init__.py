"""jobgroup: run job groups (SkyPilot job-group YAML) as one managed unit.

Public API (imported lazily, so `import jobgroup` stays cheap):
    load(path_or_text) -> JobGroup        parse and validate a spec (raises SpecError)
    JobGroup, Task, Resources             build the same spec in code
    launch(spec_or_path, ...) -> Job      submit a group; returns at once (PENDING)
    queue(all=False) -> list[Job]         jobs from the store
    logs(job, task=None, ...)             iterate log lines
    cancel(job_or_jobs)                   record the intent to cancel
    wait(job, timeout=None) -> Job        block until the job ends
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load": "jobgroup.spec",
    "dump": "jobgroup.spec",
    "SpecError": "jobgroup.spec",
    "JobGroup": "jobgroup.spec.models",
    "Task": "jobgroup.spec.models",
    "Resources": "jobgroup.spec.models",
    "JobRecovery": "jobgroup.spec.models",
    "launch": "jobgroup.api",
    "queue": "jobgroup.api",
    "logs": "jobgroup.api",
    "cancel": "jobgroup.api",
    "wait": "jobgroup.api",
    "get_job": "jobgroup.api",
    "Job": "jobgroup.api",
    "JobTask": "jobgroup.api",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:  # (no `typing` import: it costs ~10 ms at start)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jobgroup' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
