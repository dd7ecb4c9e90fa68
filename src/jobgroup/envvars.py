"""`--env` parsing and the environment nodes inherit (a module of its own: the CLI's launch
path imports nothing heavier).

What a launch sends: nodes start from a small, named part of the launching environment
(`inherited`) — what a program needs to run as the user expects on this machine (PATH and an
activated venv or conda env, locale, proxies and package indexes, CUDA and library paths,
caches) — plus the YAML's `envs`, `--env`, and jobgroup's own variables. Nothing else of the
caller's environment (tokens, cloud keys, agent sockets) travels or is stored with the job
unless asked for: `--env NAME` passes one variable by name (SkyPilot's form), and
`--inherit-env` passes everything (`launch(..., base_env=dict(os.environ))` in Python).
"""

from __future__ import annotations

from typing import Iterable, Mapping

from jobgroup.errors import UsageError

# Variables a node inherits by name ...
INHERITED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR",
    "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE",
    "LD_LIBRARY_PATH", "LIBRARY_PATH", "CPATH", "PKG_CONFIG_PATH", "MANPATH",
    "CUDA_HOME", "CUDA_PATH", "CUDA_ROOT", "CUDNN_HOME", "NCCL_HOME", "ROCM_PATH",
    "http_proxy", "https_proxy", "no_proxy", "ftp_proxy", "all_proxy",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "FTP_PROXY", "ALL_PROXY",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME",
    "HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_ENDPOINT", "HF_HUB_OFFLINE",
    "TRANSFORMERS_CACHE", "TORCH_HOME", "TRITON_CACHE_DIR",
})
# ... and by prefix: locale, package managers' settings, math libraries' threading and
# CPU-kernel choices (on some processors OPENBLAS_CORETYPE is what makes numpy correct).
INHERITED_PREFIXES = ("LC_", "CONDA_", "PIP_", "UV_", "OPENBLAS_", "OMP_", "MKL_")
# jobgroup's own settings that a launch reads from the launching environment and records with
# the job (`launch` takes them out: nodes do not get them).
LAUNCH_SETTINGS = frozenset({"JOBGROUP_LOG_MAX", "KUBECONFIG"})


def inherited(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of `environ` a node starts from by default (see the module's docstring)."""
    return {k: v for k, v in environ.items()
            if k in INHERITED or k in LAUNCH_SETTINGS or k.startswith(INHERITED_PREFIXES)}


def parse_env(pairs: Iterable[str], environ: Mapping[str, str] | None = None,
              flag: str = "--env") -> dict[str, str]:
    """`K=V` strings -> dict; `K` alone takes K's value from `environ` (the caller's
    environment, as `sky launch --env K` does). A clear UsageError (naming `flag`) for
    anything else."""
    out: dict[str, str] = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not key or not key.replace("_", "a").isalnum() or key[0].isdigit() \
                or not key.isascii():
            raise UsageError(f"{flag} {p!r}: expected KEY=VALUE (or KEY, to pass your own "
                             "value) with a valid variable name")
        if not sep:
            if environ is None:
                import os

                environ = os.environ
            if key not in environ:
                raise UsageError(f"{flag} {key}: {key} is not set in your environment (give "
                                 f"{flag} {key}=VALUE)")
            value = environ[key]
        out[key] = value
    return out
