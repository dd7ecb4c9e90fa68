"""A task document as written -> the data its model is built from, as SkyPilot reads it.

In order (SkyPilot's `Task.from_yaml_config`):
1. fields of SkyPilot's schema that jobgroup ignores: one warning each (`compat`); its internal
   fields are dropped; `resources: null` is `{}`; `resources.gpus` is `accelerators`;
2. `envs`/`secrets`: numbers and booleans become strings; an entry without a value
   (``HF_TOKEN:``), a managed secret reference (``secrets: [secrets:HF_TOKEN]``, a key
   ``secrets:HF_TOKEN``, `managed_secrets:`) is *unfilled*: to be given at launch;
3. launch-time overrides (`Overrides`: `--env`, `--secret`) replace or fill values, in every task
   (a name the file does not declare is added: to `envs` for --env, `secrets` for --secret;
   --env of a name declared in `secrets` stays a secret; --secret moves a name out of `envs`);
4. `$VAR`/`${VAR}` from the values in `file_mounts`, `workdir` and `volumes` (`envsubst`).
An unfilled entry is a warning ("give it at launch"), or an error when `Overrides.complete`
(what `launch` asks for: nothing may be left unfilled).
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

import msgspec

from jobgroup.spec import compat, envsubst, yamlnodes
from jobgroup.spec.models import INTERNAL_TASK_KEYS
from jobgroup.spec.report import Report, path_str


class Overrides(msgspec.Struct, frozen=True):
    """Launch-time values: `env` (``--env K=V``) and `secrets` (``--secret K=V``) apply to every
    task; `complete`: an entry still without a value is an error, not a warning."""

    env: dict[str, str] = msgspec.field(default_factory=dict)
    secrets: dict[str, str] = msgspec.field(default_factory=dict)
    complete: bool = False


class Unfilled(msgspec.Struct, frozen=True):
    """An `envs`/`secrets` entry left without a value, to be given at launch."""

    task: str
    field: str  # "envs" or "secrets"
    name: str
    line: int | None = None
    col: int | None = None

    @property
    def flag(self) -> str:
        """The launch option that gives it a value."""
        return f"--{'env' if self.field == 'envs' else 'secret'} {self.name}=VALUE"


def env_value(value: Any) -> Any:
    """An `envs`/`secrets` value as SkyPilot makes it a string (others are left for the type
    check to report)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value


def give_hint(field: str, name: str) -> str:
    if field == "envs":
        return (f"give it at launch: --env {name}=VALUE (or --env {name} to pass this shell's "
                f"value), or --secret {name}=VALUE to keep it hidden")
    return f"give it at launch: --secret {name}=VALUE (or --secret {name} to pass this shell's)"


def copy_marks(doc: yamlnodes.Document, old: tuple, new: tuple) -> None:
    """Positions recorded for the key path `old` (and below) also for `new`."""
    for table in (doc.keys, doc.values):
        for path in [p for p in table if p[:len(old)] == old]:
            table[new + path[len(old):]] = table[path]


class TaskPrep:
    """Prepares one task document; problems go to `report` under `where`."""

    def __init__(self, doc: yamlnodes.Document, where: str, report: Report,
                 overrides: Overrides):
        self.doc, self.where, self.report, self.overrides = doc, where, report, overrides
        self.unfilled: list[tuple[str, str, tuple]] = []  # (field, name, key path)

    def run(self) -> dict[str, Any]:
        raw = copy.deepcopy(self.doc.data)
        self._compat(raw)
        self._envs(raw)
        self._substitute(raw)
        return raw

    # -- 1. SkyPilot's fields
    def _compat(self, raw: dict[str, Any]) -> None:
        doc, where, report = self.doc, self.where, self.report
        for key in [k for k in raw if k in INTERNAL_TASK_KEYS]:
            report.error(doc, where, f"unknown field '{key}' (jobgroup fills it in itself; "
                         "write the entry in envs/secrets without a value)", (key,), on_key=True)
            del raw[key]
        for key in [k for k in raw if k in compat.DROPPED_TASK]:
            report.warning(doc, where, f"'{key}' is SkyPilot's internal bookkeeping; ignored",
                           (key,), on_key=True)
            del raw[key]
        if not compat.is_empty(raw.get("service")) and not compat.is_empty(raw.get("pool")):
            report.error(doc, where, "give either service or pool, not both (SkyPilot refuses "
                         "both too)", ("pool",), on_key=True)
        for key, why in compat.IGNORED_TASK.items():
            if not compat.is_empty(raw.get(key)):
                report.warning(doc, where, compat.ignored_message(key, why), (key,), on_key=True)
        if "resources" in raw and raw["resources"] is None:
            del raw["resources"]  # SkyPilot: an empty `resources:` is {}
        self._resources(raw.get("resources"), ("resources",))

    def _resources(self, res: Any, path: tuple) -> None:
        if not isinstance(res, dict):
            return
        doc, where, report = self.doc, self.where, self.report
        if "gpus" in res:
            if "accelerators" in res:
                report.error(doc, where, "give either gpus or accelerators (gpus is SkyPilot's "
                             "other name for accelerators), not both", (*path, "gpus"),
                             on_key=True)
                del res["gpus"]
            else:
                res["accelerators"] = res.pop("gpus")
                copy_marks(doc, (*path, "gpus"), (*path, "accelerators"))
        for key in [k for k in res if k in compat.DROPPED_RESOURCES]:
            report.warning(doc, where, f"'{key}' is SkyPilot's internal bookkeeping; ignored",
                           (*path, key), on_key=True)
            del res[key]
        for key, why in compat.IGNORED_RESOURCES.items():
            if not compat.is_empty(res.get(key)):
                report.warning(doc, where, compat.ignored_message(key, why), (*path, key),
                               on_key=True)
        for key in ("any_of", "ordered"):
            if isinstance(res.get(key), list):
                for i, alt in enumerate(res[key]):
                    self._resources(alt, (*path, key, i))

    # -- 2./3. envs and secrets
    def _envs(self, raw: dict[str, Any]) -> None:
        doc, where, report = self.doc, self.where, self.report
        unfilled: dict[str, list[str]] = {"envs": [], "secrets": []}
        for field in ("envs", "secrets"):
            mapping = raw.get(field)
            if mapping is None and field in raw:
                del raw[field]  # `envs:` with nothing under it
                continue
            if field == "secrets" and isinstance(mapping, list):
                raw[field] = mapping = self._secret_list(mapping, unfilled)
            if not isinstance(mapping, dict):
                continue
            for key in list(mapping):
                value = mapping[key]
                if field == "secrets" and key.startswith("secrets:"):
                    del mapping[key]
                    if value is not None:
                        report.error(doc, where, f"'{key}' names a managed secret, which has no "
                                     "value in the file; drop the 'secrets:' prefix to give one",
                                     (field, key), on_key=True)
                        continue
                    name = compat.secret_ref_name(key)
                    copy_marks(doc, (field, key), (field, name))
                    self._unfill(unfilled, field, name)
                elif value is None:
                    del mapping[key]
                    self._unfill(unfilled, field, key)
                else:
                    mapping[key] = env_value(value)
        managed = raw.pop(compat.MANAGED_SECRETS, None)
        if managed is not None:
            self._managed(managed, unfilled)
        self._override(raw, unfilled)
        for field, names_ in unfilled.items():
            for name in names_:
                self.unfilled.append((field, name, (field, name)))
                if self.overrides.complete:
                    report.error(doc, where, f"'{name}' has no value: {give_hint(field, name)}",
                                 (field, name))
                else:
                    report.warning(doc, where, f"'{name}' has no value in the file: "
                                   f"{give_hint(field, name)}", (field, name))
            if names_:
                raw[f"unfilled_{field}"] = names_

    def _unfill(self, unfilled: dict[str, list[str]], field: str, name: str) -> None:
        if name not in unfilled[field]:
            unfilled[field].append(name)

    def _secret_list(self, items: list[Any], unfilled: dict[str, list[str]]) -> dict[str, Any]:
        """SkyPilot's list form: every item is a managed reference ``secrets:NAME``."""
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item.startswith("secrets:"):
                self.report.error(self.doc, self.where, f"invalid secret {item!r} in the list "
                                  "form: items are references 'secrets:NAME'; give values as a "
                                  "mapping (secrets: {NAME: value})", ("secrets", i))
                continue
            name = compat.secret_ref_name(item)
            copy_marks(self.doc, ("secrets", i), ("secrets", name))
            self._unfill(unfilled, "secrets", name)
        return {}

    def _managed(self, managed: Any, unfilled: dict[str, list[str]]) -> None:
        """`managed_secrets:` (secrets SkyPilot's API server keeps): given at launch here."""
        key = compat.MANAGED_SECRETS
        if not isinstance(managed, list):
            self.report.error(self.doc, self.where, "expected a list of secret names", (key,))
            return
        for i, entry in enumerate(managed):
            if isinstance(entry, str):
                names_ = [entry]
            elif isinstance(entry, dict) and len(entry) == 1:
                names_ = list(entry)
                self.report.warning(self.doc, self.where, "a managed secret mounted as a file "
                                    "(mount_path) is given as an environment variable here",
                                    (key, i))
            else:
                self.report.error(self.doc, self.where, "expected a secret name or {NAME: "
                                  "{mount_path: PATH}}", (key, i))
                continue
            for n in names_:
                copy_marks(self.doc, (key, i), ("secrets", compat.secret_ref_name(n)))
                self._unfill(unfilled, "secrets", compat.secret_ref_name(n))

    def _override(self, raw: dict[str, Any], unfilled: dict[str, list[str]]) -> None:
        ov = self.overrides
        if not ov.env and not ov.secrets:
            return
        envs = raw["envs"] if isinstance(raw.get("envs"), dict) else {}
        secrets = raw["secrets"] if isinstance(raw.get("secrets"), dict) else {}
        for k, v in ov.env.items():
            if k in secrets or k in unfilled["secrets"]:
                secrets[k] = v
            else:
                envs[k] = v
        for k, v in ov.secrets.items():
            envs.pop(k, None)
            if k in unfilled["envs"]:
                unfilled["envs"].remove(k)
            secrets[k] = v
        for field, mapping in (("envs", envs), ("secrets", secrets)):
            for k in mapping:
                if k in unfilled[field]:
                    unfilled[field].remove(k)
            if field not in raw and mapping:
                raw[field] = mapping  # (a value of the wrong type is left for the type check)

    # -- 4. $VAR in paths
    def _substitute(self, raw: dict[str, Any]) -> None:
        envs = raw.get("envs") if isinstance(raw.get("envs"), dict) else {}
        secrets = raw.get("secrets") if isinstance(raw.get("secrets"), dict) else {}
        variables = {k: v for k, v in {**envs, **secrets}.items() if isinstance(v, str)}
        pending = {name for _, name, _ in self.unfilled}
        doc, where, report = self.doc, self.where, self.report
        for field in envsubst.FIELDS:
            if raw.get(field) is None:
                continue
            got = envsubst.substitute(raw[field], (field,), variables, pending)
            raw[field] = got.value
            for old, new in got.moved:
                copy_marks(doc, old, new)
            for path, name, on_key in got.unset:
                report.error(doc, where, f"${name} in {path_str(path)} is not set: define "
                             f"{name} in envs or secrets (SkyPilot would leave '${name}' in the "
                             f"path)", path, on_key=on_key)
            for path, new in got.collisions:
                report.error(doc, where, "with its variables filled in, this mount path is "
                             "the same as another one", path, on_key=True)
            for path, name, on_key in got.pending:
                field_of = next(f for f, n, _ in self.unfilled if n == name)
                say = report.error if self.overrides.complete else report.warning
                say(doc, where, f"${name} in {path_str(path)} is filled in when {name} gets "
                    f"its value at launch ({'--env' if field_of == 'envs' else '--secret'} "
                    f"{name}=VALUE)", path, on_key=on_key)
