"""SkyPilot's own loader as an oracle: does SkyPilot accept these YAML files?

Run with a Python that has the `skypilot` package (it pins click<8.2, so it lives in its own
virtual environment, not in the project's; see `oracle_python()` in tests/spec/oracle.py):

    .venv/skypilot-oracle/bin/python tests/spec/skypilot_oracle.py FILE...     # or paths on stdin

Prints one JSON object per line: {"file": ..., "accepted": bool, "error": str|null,
"warnings": [str]}. A file is loaded as `sky jobs launch FILE --env K=x ...` loads it: SkyPilot's
`dag_utils.load_dag_from_yaml` (job group or pipeline/task), with every `envs` entry that has
no value filled through `env_overrides` (as a user must, with `--env`); null `secrets` are left
as they are (SkyPilot takes them as references resolved at launch). Warnings are what SkyPilot
logs while loading (e.g. unknown job-group header fields).

This file is test tooling only: it imports SkyPilot, which jobgroup itself never does.
"""

from __future__ import annotations

import json
import logging
import os
import sys


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _null_envs(path: str) -> list[str]:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            docs = list(yaml.safe_load_all(f))
    except Exception:  # noqa: BLE001 - SkyPilot reports it when loading
        return []
    out: list[str] = []
    for doc in docs:
        envs = doc.get("envs") if isinstance(doc, dict) else None
        if isinstance(envs, dict):
            out += [str(k) for k, v in envs.items() if v is None and str(k) not in out]
    return out


def check(path: str, dag_utils: object, handler: _Collect) -> dict[str, object]:
    handler.messages.clear()
    overrides = [(k, "x") for k in _null_envs(path)]
    try:
        dag_utils.load_dag_from_yaml(path, env_overrides=overrides or None)  # type: ignore[attr-defined]
    except BaseException as e:  # noqa: BLE001 - any refusal is an answer (SystemExit too)
        if isinstance(e, KeyboardInterrupt):
            raise
        text = " ".join(str(e).split()) or type(e).__name__
        return {"file": path, "accepted": False, "error": f"{type(e).__name__}: {text}"[:500],
                "warnings": list(handler.messages)}
    return {"file": path, "accepted": True, "error": None, "warnings": list(handler.messages)}


def main(argv: list[str]) -> int:
    import shutil
    import tempfile

    os.environ.setdefault("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")
    home = tempfile.mkdtemp(prefix="skypilot-oracle-home-")
    os.environ["HOME"] = home  # SkyPilot writes ~/.sky on import: keep the user's home clean
    try:
        return _run(argv)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _run(argv: list[str]) -> int:
    from sky.utils import dag_utils

    handler = _Collect()
    logging.getLogger().addHandler(handler)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("sky"):
            logging.getLogger(name).addHandler(handler)
    paths = argv or [line.strip() for line in sys.stdin if line.strip()]
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what SkyPilot prints goes to stderr; stdout carries only the answers
    sys.stdout = sys.stderr
    for path in paths:
        out.write(json.dumps(check(path, dag_utils, handler)) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
