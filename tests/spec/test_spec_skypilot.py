"""SkyPilot's task and job-group files, as SkyPilot's own examples, recipes and tests write them:
jobgroup accepts what SkyPilot's loader accepts (DESIGN principle 7) and refuses true typos with
"did you mean".

Table-driven over tests/spec/data/skypilot/*.yaml (our own files, one per pattern found in
SkyPilot's repository). Each file says what to expect in its leading comments:

    # jobgroup: ok                                   no error, no warning
    # jobgroup: warning SUBJECT: WORDS               a warning at SUBJECT (the end of "WHERE KEY")
    # jobgroup: error SUBJECT: WORDS                 an error there (exactly these errors)
    # skypilot: accepts | rejects                    SkyPilot's loader's verdict
    # skypilot: accepts; jobgroup is stricter: WHY   a deliberate difference (listed in README)

jobgroup's verdict is checked always; SkyPilot's with its own loader (tests/spec/oracle.py) when
it is installed or can be installed, else those tests skip and say why.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobgroup.spec import SpecError
from jobgroup.spec.loader import load_path

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).with_name("data") / "skypilot"
FILES = sorted(DATA.glob("*.yaml"))
_EXPECT = re.compile(r"^# jobgroup: (ok|warning|error)(?: (.*?): (.*))?$", re.M)
_SKY = re.compile(r"^# skypilot: (accepts|rejects)(; jobgroup is stricter: .*)?$", re.M)


class Expect:
    def __init__(self, path: Path):
        text = path.read_text()
        self.lines = [(m.group(1), m.group(2), m.group(3)) for m in _EXPECT.finditer(text)]
        sky = _SKY.search(text)
        assert self.lines and sky, f"{path.name}: no '# jobgroup:' or '# skypilot:' line"
        self.skypilot_accepts = sky.group(1) == "accepts"
        self.stricter = sky.group(2) is not None
        self.errors = [(s, w) for kind, s, w in self.lines if kind == "error"]
        self.warnings = [(s, w) for kind, s, w in self.lines if kind == "warning"]


def _load(path: Path) -> tuple[list, list]:
    """(errors, warnings) of `jobgroup validate PATH`, run from the repository's root."""
    try:
        loaded = load_path(path.relative_to(ROOT))
    except SpecError as e:
        return ([p for p in e.problems if p.severity == "error"],
                [p for p in e.problems if p.severity == "warning"])
    return [], loaded.warnings


def _matches(problem, subject: str, words: str) -> bool:
    where = f"{problem.where} {problem.path}".strip()
    return where.endswith(subject) and words in problem.message


def _check(expected: list[tuple[str, str]], got: list, kind: str, name: str,
           exact: bool = True) -> None:
    for subject, words in expected:
        assert any(_matches(p, subject, words) for p in got), \
            f"{name}: no {kind} at {subject!r} saying {words!r}; got:\n" + \
            "\n".join(map(str, got))
    if exact:
        assert len(got) == len(expected), \
            f"{name}: other {kind}s too:\n" + "\n".join(map(str, got))


@pytest.fixture(autouse=True)
def _from_the_repo_root(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # where SkyPilot's docs run its files from


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_jobgroup_verdict(path: Path) -> None:
    expect = Expect(path)
    errors, warnings = _load(path)
    _check(expect.errors, errors, "error", path.name)
    _check(expect.warnings, warnings, "warning", path.name, exact=not expect.errors)
    if expect.skypilot_accepts and not expect.stricter:
        assert not errors, "SkyPilot accepts this file, so jobgroup must"
    if not expect.skypilot_accepts:
        assert errors, "SkyPilot refuses this file; so must jobgroup"
    for e in errors:
        assert e.line is not None, f"{e}: every error names its line"


def _oracle():
    import importlib.util

    spec = importlib.util.spec_from_file_location("skypilot_oracle_helper",
                                                  Path(__file__).with_name("oracle.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def skypilot() -> dict[str, dict]:
    oracle = _oracle()
    python, why = oracle.oracle_python()
    if python is None:
        pytest.skip(why)
    return oracle.ask([p.relative_to(ROOT) for p in FILES], cwd=ROOT)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_skypilot_verdict(path: Path, skypilot: dict[str, dict]) -> None:
    """Differential: SkyPilot's loader says what the file claims; where it accepts, jobgroup
    accepts (but for the deliberate differences); where it refuses a typo, jobgroup refuses it
    with a "did you mean" too."""
    expect = Expect(path)
    answer = skypilot[str(path.relative_to(ROOT))]
    assert answer["accepted"] == expect.skypilot_accepts, answer["error"]
    errors, _ = _load(path)
    if answer["accepted"]:
        assert not errors or expect.stricter, errors
    else:
        assert errors, f"SkyPilot refuses it ({answer['error']}); jobgroup accepts it"
        if "did you mean" in (answer["error"] or ""):
            assert any("did you mean" in e.message for e in errors), errors


_DRY = re.compile(r"^# dryrun: refuses: (.*)$", re.M)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_launch_dryrun_verdict(path: Path, tmp_path: Path) -> None:
    """What `jobgroup launch FILE --dryrun --infra local --cpu-only` says, run from the
    repository's root with the entries the file leaves without a value filled (`--env K=x`,
    `--secret K=x`, as SkyPilot's oracle fills them): a file `validate` accepts passes every
    launch check, but for what this machine cannot give (remote object storage, a git workdir:
    its `# dryrun: refuses:` line says what); a file `validate` refuses, launch refuses too, with
    exit 2 — validate and launch agree."""
    from jobgroup import api, launchreq
    from jobgroup.errors import JobGroupError

    expect = Expect(path)
    refuses = _DRY.search(path.read_text())
    rel = path.relative_to(ROOT)
    try:
        loaded = load_path(rel)
    except SpecError:
        loaded = None
    env = {u.name: "x" for u in loaded.unfilled if u.field == "envs"} if loaded else {}
    secrets = {u.name: "x" for u in loaded.unfilled if u.field == "secrets"} if loaded else {}
    request = launchreq.make(path=str(path), infra="local", cpu_only=True, env=env,
                             secret=secrets, cwd=str(ROOT))
    try:
        plan = api.dryrun(rel, request=request, home=tmp_path / "home", on_warning=lambda w: None)
    except (JobGroupError, SpecError) as e:
        code = getattr(e, "exit_code", 2)
        assert expect.errors or refuses, f"{path.name}: validate accepts it, launch refuses: {e}"
        assert code == 2, e
        if refuses and not expect.errors:
            assert refuses.group(1) in str(e), str(e)
        return
    assert not expect.errors, f"{path.name}: validate refuses it, launch --dryrun accepts it"
    assert not refuses, f"{path.name}: expected launch to refuse ({refuses.group(1)})"
    assert "dryrun: true" in plan
