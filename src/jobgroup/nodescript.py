"""What a node's shell runs for a task's `setup` or `run`: the script wrapped so that it runs
as SkyPilot runs it (pure). Every backend runs the result unchanged: `bash -c TEXT` (local,
Slurm: the controller composes it) or `bash FILE` (Kubernetes: in the job's ConfigMap).

How SkyPilot runs a script (`sky/skylet/log_lib.py`: `make_task_bash_script`,
`run_bash_command_with_log`): it writes a file that starts with a preamble —
`[ -f ~/.bashrc ] && source ~/.bashrc`, conda's `etc/profile.d/conda.sh` (sourced under
`set -a`, quietly), `export PYTHONUNBUFFERED=1`, `cd ~/sky_workdir`, then `export K=V` for the
task's variables — followed by the script (`setup` prefixed with `unset CUDA_VISIBLE_DEVICES;`,
`sky/backends/task_codegen.py`), and runs it with `/bin/bash -i FILE`, stdin /dev/null. The
`-i` is what makes `~/.bashrc` work: Debian's and Ubuntu's return at once unless `$-` holds `i`.
So what `setup` appends to `~/.bashrc` (exports, `conda activate`, `source venv/bin/activate`)
is in effect in `run`, and aliases and functions defined there work in scripts.

What jobgroup keeps: an interactive bash (`$-` holds `i`, `PS1` is set, aliases are expanded,
`/etc/bash.bashrc` is read where the distribution builds bash to) reading the script from a file
— so, as in SkyPilot, bash is interactive while it starts and runs the script as an interactive
shell's script: `exit` prints nothing, but `set -u` alone or `${X:?}` reports the error and goes
on with the next command (add `set -e` to stop there), and runtime errors carry no line number
(`bash: foo: command not found`); `~/.bashrc` sourced when it is a file; conda's profile;
`PYTHONUNBUFFERED=1` unless the node's environment sets it; the task's variables (its `envs`,
`secrets`, `--env`) and jobgroup's (`SKYPILOT_*`, `JOBGROUP_*`, `CUDA_VISIBLE_DEVICES`) set
again after `~/.bashrc` with the node's values, so a `~/.bashrc` cannot change them (as
SkyPilot's `export` lines after it do); the directory the node starts in (its workdir) again
after `~/.bashrc`; in setup, `CUDA_VISIBLE_DEVICES` unset after `~/.bashrc` too.

Where it differs, on purpose (measured with bash 5.2; tests/test_skypilot_env.py holds each):
- **no job-control noise**: an interactive bash without a terminal prints "cannot set terminal
  process group ... Inappropriate ioctl for device" and "no job control in this shell" when it
  starts (`+m` does not prevent it; SkyPilot filters the two lines out of its logs). The shell
  starts with stderr on /dev/null and takes the real one back as the first thing it runs
  (`/etc/bash.bashrc`, read before that, writes its errors nowhere);
- **SIGTERM ends the shell** as it ends a script's: an interactive bash ignores SIGTERM, so a
  stop would kill the running command and the script would go on with the next one (until the
  SIGKILL after the grace period). The start resets SIGTERM to its default, leaving no trap
  behind (`trap -p` is empty). SIGINT stays the interactive shell's (nothing sends it to a
  node);
- **one process group**: a shell started with `-i` turns job control on for its script (each
  command its own process group, which a stop that signals the group misses: the Kubernetes
  driver does). The script's first line turns it off, on the same line as the user's first
  line, so line numbers in error messages are the user's;
- **no history**: no `~/.bash_history` written (HISTFILE unset), and no `!` history expansion
  (`echo "a!b"` is not an "event not found" error, as it is under SkyPilot's `bash -i FILE`);
- **`~/.bashrc` sourced once**, not twice (SkyPilot's `bash -i` reads it at start-up and its
  preamble again): what it prints appears once, at the top of the phase's log;
- **the launching environment keeps its place** (jobgroup's nodes inherit PATH and an activated
  venv or conda env; SkyPilot's inherit nothing of the laptop): the shell you launched from had
  already run your ~/.bashrc, so what ~/.bashrc puts on PATH again does not move in front of
  it. PATH entries the node started with keep their order; entries ~/.bashrc adds (setup's
  `export PATH=...`) go where it puts them; the venv or conda env you launched from stays first
  unless ~/.bashrc activates another (`source .../activate`, `conda activate`: that one wins;
  conda's automatic activation of `base` does not count). Without this, a `pyenv init` or conda
  init in your ~/.bashrc would hide your venv's python on every node;
- `$0` is `bash` (a syntax error reads `bash: bash: line 3: ...`, bash's format for a script of
  an interactive shell), `$@` is empty; SkyPilot's `$0` is its temporary file's path.
A missing `~/.bashrc` is skipped; one with a syntax error or a failing command prints bash's
message in the log and the node goes on (the rest of a file with a syntax error is skipped);
only an `exit` in it ends the phase (with that code, as under SkyPilot). The exit code is the
script's: `exit 3`, `set -e`, and a death by a signal (recorded as that signal).
Cost: ~3 ms per phase with an empty ~/.bashrc, plus what ~/.bashrc itself takes; the text adds
~2 KB (plus the names of the task's variables) to the script.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Set again after ~/.bashrc besides the task's own variables (PYTHONUNBUFFERED only where the
# node's environment has it: else 1).
_ALWAYS = ("SKYPILOT_*", "JOBGROUP_*", "CUDA_VISIBLE_DEVICES", "PYTHONUNBUFFERED")

# File descriptors of the start-up only (the script closes them): the real stderr while the
# shell starts on /dev/null, the start-up file, the script.
_ERR, _RC, _SCRIPT = 4, 5, 3

_START = """\
# jobgroup: the task's script, run as SkyPilot runs it: an interactive bash (~/.bashrc, conda,
# PYTHONUNBUFFERED=1), quiet, one process group (jobgroup/nodescript.py)
exec {err}>&2
exec "$BASH" --rcfile /dev/fd/{rc} -i /dev/fd/{script} 2>/dev/null \\
  {rc}<<'{rc_end}' {script}<<'{end}'
"""

_RCFILE = """\
exec 2>&@ERR@ @ERR@>&- @RC@<&-
trap : TERM; trap - TERM
_jg_dir=$PWD _jg_path=$PATH _jg_venv=${VIRTUAL_ENV-} _jg_conda=${CONDA_PREFIX-}
_jg_env=$(for _jg_n in $(compgen -e 2>/dev/null); do
  case $_jg_n in @NAMES@) declare -px "$_jg_n" ;; esac
done)
[ -f ~/.bashrc ] && . ~/.bashrc
_jg_c=
if [ -n "${CONDA_EXE:-}" ]; then _jg_c=${CONDA_EXE%/*/*}
elif command -v conda >/dev/null 2>&1; then _jg_c=$(conda info --base 2>/dev/null); fi
if [ -f "$_jg_c/etc/profile.d/conda.sh" ]; then
  case $- in *a*) . "$_jg_c/etc/profile.d/conda.sh" >/dev/null 2>&1 ;;
  *) builtin set -a; . "$_jg_c/etc/profile.d/conda.sh" >/dev/null 2>&1; builtin set +a ;; esac
fi
_jg_keep() {  # the launching environment's PATH and venv/conda env (nodescript.py)
  [ "$PATH" = "$_jg_path" ] && [ "${VIRTUAL_ENV-}" = "$_jg_venv" ] &&
    [ "${CONDA_PREFIX-}" = "$_jg_conda" ] && return 0
  local own=1
  [ "${VIRTUAL_ENV-}" = "$_jg_venv" ] || own=
  case ${CONDA_PREFIX-} in
    "$_jg_conda") ;;
    "${CONDA_EXE%/*/*}") [ -n "$_jg_conda" ] && conda activate "$_jg_conda" >/dev/null 2>&1 ;;
    *) own= ;;
  esac
  local e i k= seen=: IFS=:
  local -a a o new=() old=() end=()
  [ -n "$own" ] && [ -n "$_jg_venv$_jg_conda" ] && new+=("${_jg_venv:-$_jg_conda}/bin")
  builtin read -r -a a <<<"$PATH"
  builtin read -r -a o <<<"$_jg_path"
  for i in "${!a[@]}"; do [ "${a[i]}" = "${o[0]-}" ] && k=$i; done
  for i in "${!a[@]}"; do
    case ":$_jg_path:" in
      *":${a[i]}:"*) ;;
      *) if [ -z "$k" ] || [ "$i" -lt "$k" ]; then new+=("${a[i]}"); else end+=("${a[i]}"); fi ;;
    esac
  done
  for e in "${o[@]}"; do case ":$PATH:" in *":$e:"*) old+=("$e") ;; esac; done
  a=()
  for e in "${new[@]}" "${old[@]}" "${end[@]}"; do
    case $seen in *":$e:"*) ;; *) seen=$seen$e:; a+=("$e") ;; esac
  done
  PATH="${a[*]}"
}
_jg_keep; builtin unset -f _jg_keep
builtin export PYTHONUNBUFFERED=1
builtin eval "$_jg_env"
builtin cd -- "$_jg_dir" 2>/dev/null
builtin set +H
builtin unset HISTFILE _jg_dir _jg_path _jg_venv _jg_conda _jg_env _jg_n _jg_c@UNSET@
"""

# On the user's first line: job control off (bash turned it on when it opened the script),
# the script's descriptor closed, $0.
_FIRST = "set +m; exec {script}<&-; BASH_ARGV0=bash; "


def compose(script: str, *, setup: bool = False, keep: Iterable[str] = ()) -> str:
    """The text a node's shell runs (`bash -c TEXT`, or saved to a file and `bash FILE`) for
    `script`, the task's `setup` (`setup=True`) or `run`. `keep`: the task's own variable names
    (its envs, secrets and `--env` overrides), set again after ~/.bashrc with the values the
    node was started with (names that are not shell identifiers are left out)."""
    body = script if script.endswith("\n") else script + "\n"
    rc = (_RCFILE.replace("@ERR@", str(_ERR)).replace("@RC@", str(_RC))
          .replace("@NAMES@", _patterns(keep))
          .replace("@UNSET@", " CUDA_VISIBLE_DEVICES" if setup else ""))
    rc_end = _delimiter("JOBGROUP_RC", rc)
    end = _delimiter("JOBGROUP_SCRIPT", body)
    return (_START.format(err=_ERR, rc=_RC, script=_SCRIPT, rc_end=rc_end, end=end)
            + rc + rc_end + "\n"
            + _FIRST.format(script=_SCRIPT) + body + end + "\n")


def wrapper_size(keep: Iterable[str] = ()) -> int:
    """Bytes (UTF-8) of `compose("", keep=keep)`, without composing it for each `keep`: what a
    node's shell runs around a `run` script, in the same command-line argument (spec/checks.py
    sizes scripts against it). Setup's is 21 bytes more (it unsets CUDA_VISIBLE_DEVICES),
    which `spec.limits.SCRIPT_RESERVE` covers."""
    # The names appear once, in the start-up file's `case` patterns; the rest of the text does
    # not depend on them (its here-document delimiters are no line of it either way).
    return _bare_size() + len(_patterns(keep)) - len(_patterns(()))


@functools.cache
def _bare_size() -> int:
    return len(compose("").encode())


def _patterns(keep: Iterable[str]) -> str:
    """The `case` patterns of the variables set again after ~/.bashrc (names that are not
    shell identifiers left out: ASCII, so their length is their size)."""
    return "|".join([*_ALWAYS, *sorted({n for n in keep if _NAME.fullmatch(n)})])


def _delimiter(base: str, text: str) -> str:
    """A here-document delimiter that is no line of `text`."""
    lines = set(text.splitlines())
    out, n = base, 0
    while out in lines:
        n += 1
        out = f"{base}_{n}"
    return out
