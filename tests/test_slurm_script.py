"""What a group is submitted as on Slurm (pure): settings and labels, the heterogeneous batch
script, the cluster's inventory read from `scontrol -o`, each task's alternative chosen in the
user's order with GPU types spelled as the cluster spells them, and refusals that name the task
and the limit."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from jobgroup.backends.slurm import inventory
from jobgroup.backends.slurm.backend import plan_components
from jobgroup.backends.slurm.script import (
    SettingsError, SlurmSettings, batch_script, extra_lines, slurm_time, task_submit,
)
from jobgroup.spec import load as _load_spec

GROUP = """
name: g
execution: parallel
---
name: trainer
num_nodes: 2
resources: {cpus: 4+, memory: 16, accelerators: H100:2, labels: {slurm-partition: gpu}}
run: train
---
name: server
run: serve
"""

PARTITIONS = (
    "PartitionName=debug AllowGroups=ALL Default=YES MaxNodes=UNLIMITED MaxTime=UNLIMITED "
    "Nodes=node[1-7] State=UP TotalCPUs=14 TotalNodes=7\n"
    "PartitionName=short Default=NO MaxNodes=2 MaxTime=01:00:00 Nodes=node[6-7] State=UP "
    "TotalNodes=2\n")
NODES = "".join(
    f"NodeName=node{i} Arch=x86_64 CoresPerSocket=1 CPUAlloc=0 CPUTot=2 "
    f"AvailableFeatures={'gpu' if i <= 2 else 'cpu'} ActiveFeatures=x "
    f"Gres={'gpu:A100:2(S:0-1)' if i <= 2 else '(null)'} NodeAddr=10.0.0.{i} "
    f"OS=Linux 6.1 #1 SMP RealMemory=4000 State=IDLE "
    f"Partitions=debug{',short' if i >= 6 else ''}\n" for i in range(1, 8))


def load(text: str):
    return _load_spec(textwrap.dedent(text))


INV = inventory.Inventory(inventory.parse_partitions(PARTITIONS), inventory.parse_nodes(NODES))


def _plan(text: str, settings: SlurmSettings | None = None, **options):
    return plan_components(load(text), settings or SlurmSettings(), options, INV)


def test_inventory_is_read_from_scontrol_one_line_output():
    assert INV.default_partition() == "debug"
    assert INV.partitions["short"].max_nodes == 2
    assert INV.partitions["short"].max_time == "01:00:00"
    assert INV.partitions["debug"].total_nodes == 7 and INV.partitions["debug"].max_time is None
    n1 = INV.nodes[0]
    assert (n1.name, n1.cpus, n1.memory_mb, n1.gpus, n1.features) == (
        "node1", 2, 4000, {"A100": 2}, frozenset({"gpu"}))
    assert INV.nodes[6].partitions == ("debug", "short") and INV.nodes[6].address == "10.0.0.7"
    assert inventory.parse_gres("gpu:a100:4(S:0,1),gpu:2,nic:1") == {"a100": 4, "": 2}


def test_one_component_per_task_with_resources_settings_and_agents():
    group = load(GROUP)
    comps, why = plan_components(group, SlurmSettings(partition="cpu", account="ml",
                                                      qos="high"), {}, None)
    assert why == ""
    script = batch_script(group, comps, 7, "abcd", Path("/state/jobs/7"))
    parts = script.split("#SBATCH hetjob\n")
    assert len(parts) == 2
    trainer, server = parts
    for line in ("--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=4", "--mem=16384M",
                 "--gres=gpu:H100:2", "--partition=gpu", "--account=ml", "--qos=high",
                 "--comment=jobgroup:abcd:7", "--job-name=jobgroup-7-g", "--no-requeue",
                 "--output=/state/jobs/7/slurm-%j.out"):
        assert f"#SBATCH {line}\n" in trainer, line
    assert "#SBATCH --partition=cpu\n" in server and "--gres" not in server
    # The body: one agent step per task, one agent per node, then the group's result.
    assert "d=/state/jobs/7/slurm\n" in server
    assert ('srun --het-group=0 --nodes=2 --ntasks=2 --ntasks-per-node=1 --kill-on-bad-exit=0 '
            '--job-name=jobgroup-agent-0 "$d/jobgroup-agent" "$d" 0 trainer &\n') in server
    assert '--het-group=1 --nodes=1 --ntasks=1' in server
    assert "sleep infinity" not in script
    assert script.rstrip().endswith('exit "$(cat "$d/end" 2>/dev/null || echo 1)"')
    # One task: an ordinary job, no het groups.
    one = load("name: solo\nrun: x\n")
    comps, _ = plan_components(one, SlurmSettings(), {}, None)
    script = batch_script(one, comps, 8, "abcd", Path("/s/jobs/8"))
    assert "hetjob" not in script and "--het-group" not in script


def test_time_limit_constraint_exclusive_and_extra_lines_from_the_file_and_labels():
    settings = SlurmSettings(time="2h", constraint="ib", exclusive=True,
                             sbatch=["--reservation=maint", "--mail-type=END"])
    group = load("""
        name: t
        execution: parallel
        ---
        name: a
        run: x
        ---
        name: b
        resources:
          labels: {slurm-time: "1-00:00:00", slurm-constraint: "gpu&nvlink",
                   slurm-exclusive: "false", slurm-sbatch: "--begin=now; --nice=10"}
        run: y
        """)
    comps, why = plan_components(group, settings, {}, None)
    assert why == ""
    a, b = batch_script(group, comps, 1, "t", Path("/s/jobs/1")).split("#SBATCH hetjob\n")
    for line in ("--time=120", "--constraint=ib", "--exclusive", "--reservation=maint",
                 "--mail-type=END"):
        assert f"#SBATCH {line}\n" in a, line
    for line in ("--time=1-00:00:00", "--constraint=gpu&nvlink", "--begin=now", "--nice=10"):
        assert f"#SBATCH {line}\n" in b, line
    assert "--exclusive" not in b and "--reservation" not in b


@pytest.mark.parametrize("value, want", [
    ("90", "90"), (90, "90"), ("2:00:00", "2:00:00"), ("1-12", "1-12"), ("2h", "120"),
    ("90m", "90"), ("1.5d", "2160"), ("1w", "10080"), ("unlimited", "UNLIMITED"),
])
def test_time_limits_in_slurms_words(value, want):
    assert slurm_time(value, "x") == want


def test_settings_slurm_cannot_be_given_are_refused_by_name():
    with pytest.raises(SettingsError, match=r"slurm.yaml: time: 'soon' is not a time limit"):
        slurm_time("soon", "slurm.yaml: time")
    with pytest.raises(SettingsError, match="sets it from num_nodes"):
        extra_lines(["--nodes=3"], "slurm.yaml: sbatch")
    with pytest.raises(SettingsError, match="use `partition` in slurm.yaml"):
        extra_lines("-p gpu", "x")
    with pytest.raises(SettingsError, match="is not an sbatch option"):
        extra_lines(["reservation=maint"], "x")
    with pytest.raises(SettingsError, match="may not span lines"):
        extra_lines(["--begin=now\n#SBATCH --nodes=9"], "x")
    task = load("name: w\nresources: {labels: {slurm-tme: '10'}}\nrun: x\n").tasks[0]
    with pytest.raises(SettingsError, match="label slurm-tme .*did you mean 'slurm-time'"):
        task_submit(task, SlurmSettings())
    task = load("name: w\nresources: {labels: {slurm-exclusive: maybe}}\nrun: x\n").tasks[0]
    with pytest.raises(SettingsError, match="task 'w': label slurm-exclusive: expected true"):
        task_submit(task, SlurmSettings())


def test_refusals_name_the_task_and_the_limit():
    _, why = _plan("name: workers\nnum_nodes: 10\nrun: x\n")
    assert why == "task 'workers' asks for 10 nodes; partition debug has 7"
    _, why = _plan("name: big\nresources: {cpus: 4}\nrun: x\n")
    assert why == "task 'big' asks for 4 CPUs per node; the nodes of partition debug have at most 2"
    _, why = _plan("name: fat\nresources: {memory: 16}\nrun: x\n")
    assert why.startswith("task 'fat' asks for 16 GB (16384 MB) of memory per node")
    _, why = _plan("name: h\nresources: {accelerators: H100:1}\nrun: x\n")
    assert why == ("task 'h' asks for 1 GPU(s) H100 per node; partition debug has only "
                   "gpu:A100:2")
    _, why = _plan("name: many\nnum_nodes: 3\nresources: {accelerators: A100:1}\nrun: x\n")
    assert why == ("task 'many' asks for 3 nodes with 1 GPU(s) A100 each; partition debug "
                   "has 2 such node(s)")
    _, why = _plan("name: s\nnum_nodes: 3\nresources: {labels: {slurm-partition: short}}\n"
                   "run: x\n")
    assert why == "task 's' asks for 3 nodes; partition short has 2"
    _, why = _plan("name: s\nresources: {labels: {slurm-partition: short, slurm-time: 2h}}\n"
                   "run: x\n")
    assert why == "task 's' asks for a time limit of 120; partition short allows 01:00:00"
    _, why = _plan("name: n\nresources: {labels: {slurm-partition: nope}}\nrun: x\n")
    assert why == "task 'n': partition 'nope' does not exist (partitions: debug, short)"
    _, why = _plan("name: f\nresources: {labels: {slurm-constraint: ib}}\nrun: x\n")
    assert why.startswith("task 'f' asks for nodes with features 'ib'; no node of partition "
                          "debug has them (features there: cpu, gpu)")
    _, why = _plan("""
        name: g
        execution: parallel
        ---
        name: a
        num_nodes: 4
        run: x
        ---
        name: b
        num_nodes: 4
        run: y
        """)
    assert why == ("the group needs 8 nodes of partition debug at once (a heterogeneous job "
                   "gives every task nodes of its own: a 4, b 4); partition debug has 7")


def test_gpu_types_as_the_cluster_spells_them_and_alternatives_in_order():
    (c,), _ = _plan("name: a\nresources: {accelerators: a100:1}\nrun: x\n")
    assert c.gres == "gpu:A100:1"
    (c,), _ = _plan("name: a\nresources: {accelerators: [H100:1, A100:2]}\nrun: x\n")
    assert c.gres == "gpu:A100:2"  # H100 is not there: the next alternative
    (c,), _ = _plan("name: a\nresources: {accelerators: {A100: 1, H100: 1}}\nrun: x\n")
    assert c.gres == "gpu:A100:1"
    (c,), _ = _plan("""
        name: a
        resources:
          ordered:
            - {accelerators: H100:8}
            - {cpus: 2, accelerators: A100:1}
        run: x
        """)
    assert (c.gres, c.cpus) == ("gpu:A100:1", 2)
    _, why = _plan("name: a\nresources: {accelerators: [H100:1, V100:1]}\nrun: x\n")
    assert why == ("task 'a' asks for 1 GPU(s) H100 per node; partition debug has only "
                   "gpu:A100:2; its other alternatives do not fit either: asks for 1 GPU(s) "
                   "V100 per node; partition debug has only gpu:A100:2")
    # --gpus any: any type, counts kept; --cpu-only: no GPU at all.
    (c,), _ = _plan("name: a\nresources: {accelerators: H100:2}\nrun: x\n", gpus_any=True)
    assert c.gres == "gpu:2"
    (c,), _ = _plan("name: a\nresources: {accelerators: H100:8}\nrun: x\n", cpu_only=True)
    assert c.gres is None
    _, why = _plan("name: a\nresources: {accelerators: H100:4}\nrun: x\n", gpus_any=True)
    assert why == ("task 'a' asks for 4 GPU(s) of any type per node; the nodes of partition "
                   "debug have at most 2")


def test_compact_node_lists_are_expanded_in_slurms_order():
    from jobgroup.backends.slurm.commands import hostnames

    assert hostnames("node[1-3,7],gpu[08-10],login") == [
        "node1", "node2", "node3", "node7", "gpu08", "gpu09", "gpu10", "login"]
    assert hostnames("node5") == ["node5"]
    assert hostnames("n[1-2]-ib") == ["n1-ib", "n2-ib"]
    assert hostnames("rack[1-2]-n[1-2]") is None  # left to `scontrol show hostnames`
