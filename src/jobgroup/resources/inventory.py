"""This machine's CPUs, memory and GPUs, as offered to job groups.

Where the numbers come from, in order (the first that applies wins, per kind):

- GPUs: ``JOBGROUP_FAKE_GPUS`` (env, e.g. ``H100:4`` or ``H100:2,A100:2``, or ``none``), else
  ``fake_gpus`` in the config file, else NVML (when ``pynvml`` is importable), else
  ``nvidia-smi --query-gpu=index,name,memory.total,uuid --format=csv,noheader``, else none.
- CPUs: the CPUs this process may run on (``sched_getaffinity``), else ``os.cpu_count()``.
- Memory: ``MemTotal`` of ``/proc/meminfo`` (else ``sysconf``), in GB (2**30 bytes).

The config file ``$JOBGROUP_HOME/resources.yaml`` (all keys optional, unknown keys are errors)
lowers what is offered, e.g. a workstation that keeps two of its eight GPUs for its owner::

    cpus: 12            # offer at most 12 CPUs
    memory: 64          # GB (or "64GB", "512MB")
    gpus: [0, 1, 2, 3, 4, 5]   # indices offered; or a count (first N); or "all" / "none"
    fake_gpus: H100:4   # tests: pretend these GPUs exist (indices 0..N-1)

A config can only offer less than the machine has (more CPUs or memory than detected is an
error: nodes would be admitted that the kernel cannot run).

GPU types: a GPU's ``type`` is its model as SkyPilot names accelerators (``NVIDIA H100 80GB
HBM3`` -> ``H100``, ``NVIDIA A100-SXM4-80GB`` -> ``A100-80GB``, ``NVIDIA GeForce RTX 4090`` ->
``RTX4090``). `gpu_matches` decides whether a requested name fits a GPU (case-insensitive;
``A100`` matches any A100, ``A100-80GB`` only the 80 GB ones).
"""

from __future__ import annotations

import os
import re
from typing import Mapping

import msgspec

from jobgroup.errors import UsageError

CONFIG_NAME = "resources.yaml"
FAKE_ENV = "JOBGROUP_FAKE_GPUS"
NVIDIA_SMI_ARGS = ("--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader")
CONFIG_KEYS = ("cpus", "memory", "gpus", "fake_gpus")
_VENDOR_WORDS = {"NVIDIA", "TESLA", "GEFORCE", "QUADRO", "AMD", "RADEON", "INSTINCT"}
_MEM_TOKEN = re.compile(r"\d+GB")


class ResourceConfigError(UsageError):
    """A malformed resources config file or fake GPU inventory (message names the source)."""


class Gpu(msgspec.Struct, frozen=True):
    """One GPU. `index` is what CUDA_VISIBLE_DEVICES takes (PCI bus order, as nvidia-smi
    numbers them); `type` the SkyPilot-style model name; `name` the full name reported."""

    index: int
    type: str
    name: str = ""
    memory_mb: int = 0
    uuid: str = ""


class Inventory(msgspec.Struct, frozen=True):
    """What this machine offers to job groups (after the config file's limits).

    `cpus`/`memory_gb` are what admission may hand out; `machine_cpus`/`machine_memory_gb` what
    was detected. `gpu_source` says where the GPU list came from (``nvml``, ``nvidia-smi``,
    ``fake (JOBGROUP_FAKE_GPUS)``, ``fake (resources.yaml)``, ``none``); `notes` are lines
    worth showing a user (a failed nvidia-smi, GPUs withheld by the config file).
    """

    cpus: float
    memory_gb: float
    gpus: tuple[Gpu, ...] = ()
    machine_cpus: float = 0.0
    machine_memory_gb: float = 0.0
    gpu_source: str = "none"
    notes: tuple[str, ...] = ()

    def gpu_types(self) -> dict[str, int]:
        """GPU count per type, in index order of first appearance."""
        out: dict[str, int] = {}
        for g in self.gpus:
            out[g.type] = out.get(g.type, 0) + 1
        return out


# ---- GPU names ------------------------------------------------------------------------------


def gpu_type(name: str) -> str:
    """The SkyPilot-style type of a GPU from its reported name (see the module docstring)."""
    tokens = [t for t in re.split(r"[\s\-_]+", name.strip()) if t]
    upper = [t.upper() for t in tokens]
    words = [t for t in upper if t not in _VENDOR_WORDS]
    if not words:
        return name.strip() or "GPU"
    model = words[0]
    if model == "RTX" and len(words) > 1:
        model = "RTX" + words[1]
    if model == "A100" and "80GB" in words:
        return "A100-80GB"
    return model


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", "", name).upper()


def gpu_aliases(gpu: Gpu) -> frozenset[str]:
    """Normalized (upper-case, no spaces) names a request may use for `gpu`."""
    t = _norm(gpu.type)
    out = {t, _norm(gpu.name)} if gpu.name else {t}
    base = t.split("-", 1)[0]
    out.add(base)
    if base.startswith("RTX") and len(base) > 3:
        out.add(base[3:])  # RTXA6000 <- A6000
    for tok in re.split(r"[\s\-_]+", gpu.name.upper()):
        if _MEM_TOKEN.fullmatch(tok):
            out.add(f"{base}-{tok}")
    return frozenset(out)


def gpu_matches(requested: str, gpu: Gpu) -> bool:
    """True when a request for accelerator `requested` (e.g. ``h100``) may use `gpu`."""
    return _norm(requested) in gpu_aliases(gpu)


# ---- parsers (pure) -------------------------------------------------------------------------


def parse_nvidia_smi(text: str) -> tuple[list[Gpu], list[str]]:
    """GPUs from ``nvidia-smi --query-gpu=index,name,memory.total[,uuid] --format=csv,noheader
    [,nounits]`` output, plus one note per line that could not be read (nvidia-smi prints its
    errors, e.g. "No devices were found", on stdout)."""
    gpus: list[Gpu] = []
    notes: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            notes.append(f"nvidia-smi: {line}")
            continue
        index = int(parts[0])
        uuid = ""
        if len(parts) >= 4 and parts[-1].upper().startswith(("GPU-", "MIG-")):
            uuid = parts[-1]
            parts = parts[:-1]
        name = ",".join(parts[1:-1]).strip()
        mem = re.match(r"\s*(\d+)", parts[-1])
        gpus.append(Gpu(index=index, type=gpu_type(name), name=name,
                        memory_mb=int(mem.group(1)) if mem else 0, uuid=uuid))
    gpus.sort(key=lambda g: g.index)
    return gpus, notes


def parse_fake_gpus(value: str, source: str = FAKE_ENV) -> list[Gpu]:
    """A fake GPU list: ``H100:4``, ``H100:2,A100:2`` (indices 0.. in that order), ``H100``
    (one), ``none`` or ``""`` (no GPUs). ResourceConfigError naming `source` when malformed."""
    gpus: list[Gpu] = []
    text = value.strip()
    if text.lower() in ("", "none", "0"):
        return gpus
    for item in text.split(","):
        name, _, count = item.strip().partition(":")
        name = name.strip()
        count = count.strip() or "1"
        if not name or not count.isdigit() or int(count) < 1 or re.search(r"\s", name):
            raise ResourceConfigError(
                f"{source}: invalid fake GPU list {value!r}: expected TYPE:COUNT[,TYPE:COUNT...] "
                "(e.g. H100:4 or H100:2,A100:2) or none")
        for _ in range(int(count)):
            gpus.append(Gpu(index=len(gpus), type=name, name=name))
    return gpus


class Config(msgspec.Struct, frozen=True):
    """The parsed config file; None means "not limited"."""

    cpus: float | None = None
    memory_gb: float | None = None
    gpus: tuple[int, ...] | int | None = None  # indices, or a count (first N)
    fake_gpus: str | None = None


def parse_config(text: str, source: str) -> Config:
    """Parse the YAML text of a resources config (`source` names it in errors)."""
    import yaml  # only when a config file exists

    from jobgroup.spec.resources import parse_cpus, parse_memory

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ResourceConfigError(f"{source}: not valid YAML: {e}") from None
    if data is None:
        return Config()
    if not isinstance(data, dict):
        raise ResourceConfigError(f"{source}: expected a mapping with keys {', '.join(CONFIG_KEYS)}")
    unknown = sorted(str(k) for k in data if k not in CONFIG_KEYS)
    if unknown:
        raise ResourceConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; "
                                  f"expected {', '.join(CONFIG_KEYS)}")
    try:
        cpus = parse_cpus(data.get("cpus"))
        mem = parse_memory(data.get("memory"))
    except ValueError as e:
        raise ResourceConfigError(f"{source}: {e}") from None
    gpus_raw = data.get("gpus")
    gpus: tuple[int, ...] | int | None
    if gpus_raw is None or gpus_raw == "all":
        gpus = None
    elif gpus_raw == "none":
        gpus = 0
    elif isinstance(gpus_raw, int) and not isinstance(gpus_raw, bool) and gpus_raw >= 0:
        gpus = gpus_raw
    elif isinstance(gpus_raw, list) and all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in gpus_raw
    ):
        gpus = tuple(dict.fromkeys(gpus_raw))
    else:
        raise ResourceConfigError(f"{source}: invalid gpus {gpus_raw!r}: expected a count, a "
                                  "list of GPU indices, 'all' or 'none'")
    fake = data.get("fake_gpus")
    if isinstance(fake, list):
        fake = ",".join(str(x) for x in fake)
    if fake is not None and not isinstance(fake, str):
        raise ResourceConfigError(f"{source}: invalid fake_gpus {fake!r}: expected e.g. H100:4")
    if fake is not None:
        parse_fake_gpus(fake, f"{source}: fake_gpus")
    return Config(cpus=cpus.value if cpus else None, memory_gb=mem.value if mem else None,
                  gpus=gpus, fake_gpus=fake)


# ---- detection (touches the machine) --------------------------------------------------------


def machine_cpus() -> float:
    """CPUs this process may use."""
    try:
        return float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return float(os.cpu_count() or 1)


def machine_memory_gb() -> float:
    """Physical memory in GB (2**30 bytes)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024 / 2**30
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 0.0


def _nvml_gpus() -> list[Gpu] | None:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - NVML raises its own NVMLError kinds; fall back
        return None
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            name = name.decode() if isinstance(name, bytes) else str(name)
            uuid = pynvml.nvmlDeviceGetUUID(h)
            uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h).total // 2**20
            out.append(Gpu(index=i, type=gpu_type(name), name=name, memory_mb=int(mem), uuid=uuid))
        return out
    except Exception:  # noqa: BLE001
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def _smi_gpus() -> tuple[list[Gpu], list[str]] | None:
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, *NVIDIA_SMI_ARGS], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [], [f"nvidia-smi failed: {e}"]
    gpus, notes = parse_nvidia_smi(proc.stdout)
    if proc.returncode != 0:
        err = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        notes = [f"nvidia-smi exited {proc.returncode}: {err[0] if err else ''}".rstrip(": ")]
        gpus = []
    return gpus, notes


def detect_gpus(env: Mapping[str, str] | None = None, config: Config | None = None
                ) -> tuple[list[Gpu], str, list[str]]:
    """(GPUs, source, notes) by the order in the module docstring."""
    env = os.environ if env is None else env
    fake = env.get(FAKE_ENV)
    if fake:
        return parse_fake_gpus(fake), f"fake ({FAKE_ENV})", []
    if config is not None and config.fake_gpus is not None:
        return parse_fake_gpus(config.fake_gpus, CONFIG_NAME), f"fake ({CONFIG_NAME})", []
    nvml = _nvml_gpus()
    if nvml is not None:
        return nvml, "nvml", []
    smi = _smi_gpus()
    if smi is not None:
        return smi[0], "nvidia-smi", smi[1]
    return [], "none", []


def load_config(home: str | os.PathLike[str] | None) -> Config | None:
    """The config file of state directory `home`, or None when there is none."""
    if home is None:
        return None
    path = os.path.join(os.fspath(home), CONFIG_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ResourceConfigError(f"{path}: cannot read: {e}") from None
    return parse_config(text, str(path))


def build(*, cpus: float, memory_gb: float, gpus: list[Gpu], gpu_source: str,
          config: Config | None = None, notes: list[str] | None = None,
          source: str = CONFIG_NAME) -> Inventory:
    """Apply `config`'s limits to detected amounts (pure). ResourceConfigError when the config
    offers more than detected or names a GPU index that does not exist."""
    notes = list(notes or [])
    offer_cpus, offer_mem, offer_gpus = cpus, memory_gb, list(gpus)
    if config is not None:
        if config.cpus is not None:
            if config.cpus > cpus + 1e-9:
                raise ResourceConfigError(f"{source}: cpus {config.cpus:g} is more than this "
                                          f"machine has ({cpus:g})")
            offer_cpus = config.cpus
        if config.memory_gb is not None:
            if config.memory_gb > memory_gb + 1e-6:
                raise ResourceConfigError(f"{source}: memory {config.memory_gb:g} GB is more "
                                          f"than this machine has ({memory_gb:.1f} GB)")
            offer_mem = config.memory_gb
        if isinstance(config.gpus, int):
            if config.gpus > len(gpus):
                raise ResourceConfigError(f"{source}: gpus {config.gpus} is more than this "
                                          f"machine has ({len(gpus)})")
            offer_gpus = gpus[: config.gpus]
        elif config.gpus is not None:
            known = {g.index: g for g in gpus}
            missing = [i for i in config.gpus if i not in known]
            if missing:
                raise ResourceConfigError(
                    f"{source}: no GPU with index {', '.join(map(str, missing))} "
                    f"(this machine has {', '.join(str(g.index) for g in gpus) or 'none'})")
            offer_gpus = [known[i] for i in sorted(config.gpus)]
        if len(offer_gpus) < len(gpus):
            notes.append(f"{source} offers {len(offer_gpus)} of {len(gpus)} GPU(s)")
    return Inventory(cpus=offer_cpus, memory_gb=offer_mem, gpus=tuple(offer_gpus),
                     machine_cpus=cpus, machine_memory_gb=memory_gb, gpu_source=gpu_source,
                     notes=tuple(notes))


def detect(home: str | os.PathLike[str] | None = None,
           env: Mapping[str, str] | None = None) -> Inventory:
    """This machine's inventory for state directory `home` (its ``resources.yaml`` applies).

    Call it once when the controller starts (nvidia-smi takes ~50-500 ms); the result is
    immutable. Raises ResourceConfigError for a bad config file or fake GPU list.
    """
    config = load_config(home)
    gpus, source, notes = detect_gpus(env, config)
    src = os.path.join(os.fspath(home), CONFIG_NAME) if home is not None else CONFIG_NAME
    return build(cpus=machine_cpus(), memory_gb=machine_memory_gb(), gpus=gpus,
                 gpu_source=source, config=config, notes=notes, source=src)


def recorded(home: str | os.PathLike[str]) -> Inventory:
    """What the running controller of `home` admits against (it recorded its inventory when
    it started, maybe with another JOBGROUP_FAKE_GPUS); our own detection when none ran yet."""
    try:
        with open(os.path.join(os.fspath(home), "inventory.json"), "rb") as f:
            return msgspec.json.decode(f.read(), type=Inventory)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return detect(home)
