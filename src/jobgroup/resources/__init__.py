"""What this machine offers and what job groups ask of it.

- `inventory`: this machine's CPUs, memory and GPUs (detected, overridable by
  ``$JOBGROUP_HOME/resources.yaml``, faked for tests with ``JOBGROUP_FAKE_GPUS``).
- `requests`: what each task of a group asks per node (``cpus``, ``memory``, ``accelerators``).
- `admission`: the pure scheduling pass (all-or-nothing, FIFO with backfill, placement, reasons).
- `cgroups`: per-node CPU and memory limits where the machine allows them.

Submodules are imported on use; this package imports nothing heavy.
"""
