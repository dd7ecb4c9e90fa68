"""The options of `jobgroup launch`, declared once.

Each `Flag` here becomes, with no other edit:
- an option of the click command (`cli.jobs.launch`, via `click_options`),
- an option the short road parses (`cli.fastlaunch.parse`, via `FAST`),
- a field of the typed request the controller receives and the API takes
  (`launchreq.LaunchRequest`, built from `SENT`),
so a new flag is one entry here, then read as `request.<field>` where it acts. Stdlib only: the
short road imports this and must stay free of click, msgspec and YAML.

Kinds: "text" (a string or None), "number" (a float), "count" (a whole number or None), "switch"
(a bool flag), "env" (repeated K=V or K, a dict; K alone takes the caller's value), "choice" (one
of `choices`, or None), "file" (a path the CLI reads itself: not sent, not on the short road),
"infra" (a backend's name, alias or `kubernetes/CONTEXT`: `infra_problem`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Flag:
    field: str  # the request's field (and the click parameter's name)
    names: tuple[str, ...]  # "-n", "--name"
    kind: str
    help: str
    default: object = None
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    sent: bool = True  # part of the request; False: the CLI's own (detach, dry run, ...)
    fast: bool = True  # the short road may take it (False: only the click command does)


FLAGS: tuple[Flag, ...] = (
    Flag("name", ("-n", "--name"), "text", "Name of the group (overrides the header's name)."),
    Flag("env", ("--env",), "env", "Set an environment variable in every node (wins over the "
         "YAML's envs); K alone passes your own value of K.", default={}, metavar="K=V|K"),
    Flag("secret", ("--secret",), "env", "Set a secret in every node (as SkyPilot's --secret: "
         "never printed); K alone passes your own value of K. Fills the YAML's `secrets:` "
         "entries left without a value.", default={}, metavar="K=V|K"),
    Flag("inherit_env", ("--inherit-env",), "switch", "Nodes inherit your whole environment "
         "(default: only PATH, HOME, locale, venv/conda, proxies, package-index and CUDA/library "
         "paths; see README).", default=False, sent=False),
    Flag("detach", ("-d", "--detach", "--detach-run"), "switch", "Print the job ID and return "
         "at once (--detach-run: SkyPilot's name).", default=False, sent=False),
    Flag("yes", ("-y", "--yes"), "switch", "Accepted for SkyPilot's scripts: launch never asks "
         "for confirmation.", default=False, sent=False),
    Flag("infra", ("--infra",), "infra", "Run every task on this infra, whatever the YAML says: "
         "local, slurm, kubernetes (or k8s), kubernetes/CONTEXT.",
         metavar="local|slurm|kubernetes[/CONTEXT]"),
    Flag("grace", ("--grace",), "number", "Seconds between SIGTERM and SIGKILL when stopping a "
         "node.", default=10.0),
    Flag("env_file", ("--env-file",), "file", "A dotenv file of variables for every node "
         "(--env wins); its values also fill secrets (as SkyPilot's --env-file).",
         sent=False, fast=False, metavar="FILE"),
    Flag("secret_file", ("--secret-file",), "file", "A dotenv file of secrets for every node "
         "(--secret wins).", sent=False, fast=False, metavar="FILE"),
    Flag("workdir", ("--workdir",), "text", "Use this directory as every task's workdir "
         "(relative to the current directory)."),
    Flag("gpus", ("--gpus",), "text", "TYPE[:N]: a single-task file's accelerators (as sky "
         "jobs launch; ignored for a job group). 'any': accept any GPU type for the YAML's "
         "accelerators.", metavar="TYPE[:N]|any"),
    Flag("cpus", ("--cpus",), "text", "vCPUs per node of a single-task file, e.g. 4 or 4+ (as "
         "sky jobs launch; ignored for a job group).", metavar="N[+]"),
    Flag("memory", ("--memory",), "text", "Memory per node of a single-task file in GB, e.g. "
         "16 or 16+ (as sky jobs launch; ignored for a job group).", metavar="N[+]"),
    Flag("num_nodes", ("--num-nodes",), "count", "Nodes of a single-task file (as sky jobs "
         "launch; ignored for a job group).", metavar="N"),
    Flag("cpu_only", ("--cpu-only",), "switch", "Run tasks that ask for GPUs without GPUs "
         "(smoke tests of cluster YAML).", default=False),
    Flag("best_effort", ("--best-effort",), "switch", "A group sized for a cluster (more CPUs "
         "or memory than this machine has) runs here with no CPU/memory reservation and no "
         "limits, instead of failing FAILED_NO_RESOURCE.", default=False),
    Flag("no_egress", ("--no-egress",), "switch", "Nodes get no way out (no NAT, no DNS): "
         "only each other and this machine (sandboxed workloads; local backend).",
         default=False),
    Flag("dryrun", ("--dryrun",), "switch", "Launch nothing: check everything launch checks, "
         "then print the plan (nodes, names, resources, mounts, variable names; the sbatch "
         "script on Slurm, the objects on Kubernetes). Exit 0, or 2 as validate.",
         default=False, sent=False, fast=False),
    Flag("output", ("-o", "--output"), "choice", "Format of --dryrun's output.", default="yaml",
         choices=("yaml", "json"), sent=False, fast=False),
)

SENT = tuple(f for f in FLAGS if f.sent)
# --infra's choices (the backends of `backends.registry`, kept equal by a test) and aliases.
INFRAS = ("local", "slurm", "kubernetes")
INFRA_ALIASES = {"k8s": "kubernetes"}
# option name -> flag, for the short road
FAST = {n: f for f in FLAGS if f.fast for n in f.names}


def defaults() -> dict[str, object]:
    """Every flag's field at its default (fresh containers)."""
    return {f.field: (dict(f.default) if isinstance(f.default, dict) else f.default)
            for f in FLAGS}


def infra_problem(value: str) -> str | None:
    """What is wrong with an --infra value (None: nothing): a backend, an alias, or
    `kubernetes/CONTEXT` (`k8s/CONTEXT`); a close name is suggested (`slurmm` -> `slurm`)."""
    name, slash, context = value.partition("/")
    kind = INFRA_ALIASES.get(name.strip().lower(), name.strip().lower())
    if kind in INFRAS and (not slash or (kind == "kubernetes" and context.strip())):
        return None
    if kind in INFRAS:
        return (f"{value!r}: only kubernetes takes a context (kubernetes/CONTEXT)" if kind !=
                "kubernetes" else f"{value!r}: give the context after the slash")
    import difflib

    close = difflib.get_close_matches(kind, [*INFRAS, *INFRA_ALIASES], n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (f"{value!r} is not one of local, slurm, kubernetes (k8s), "
            f"kubernetes/CONTEXT{hint}")


def valid_env_name(key: str) -> bool:
    return bool(key) and key.isascii() and key.replace("_", "a").isalnum() \
        and not key[0].isdigit()
