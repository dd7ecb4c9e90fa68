"""Development clusters on this machine: real schedulers with emulated nodes, so the backends
that talk to a cluster (Slurm) can be tried and tested on one machine. See `slurm`."""
