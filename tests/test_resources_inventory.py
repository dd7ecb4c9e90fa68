"""Inventory: nvidia-smi output samples, GPU type names, the fake inventory and the override
file (pure, plus `detect` against a temporary state directory)."""

from __future__ import annotations

import pytest

from jobgroup.resources.inventory import (
    FAKE_ENV, Config, Gpu, ResourceConfigError, build, detect, gpu_matches, gpu_type,
    parse_config, parse_fake_gpus, parse_nvidia_smi,
)

SMI_H100 = """\
0, NVIDIA H100 80GB HBM3, 81559 MiB, GPU-1a2b3c4d-0000-1111-2222-333344445555
1, NVIDIA H100 80GB HBM3, 81559 MiB, GPU-1a2b3c4d-0000-1111-2222-333344445556
2, NVIDIA H100 80GB HBM3, 81559 MiB, GPU-1a2b3c4d-0000-1111-2222-333344445557
3, NVIDIA H100 80GB HBM3, 81559 MiB, GPU-1a2b3c4d-0000-1111-2222-333344445558
"""
SMI_MIXED_NOUNITS = """\
1, Tesla V100-SXM2-16GB, 16384
0, NVIDIA A100-SXM4-80GB, 81920
"""


def test_parse_nvidia_smi_samples():
    gpus, notes = parse_nvidia_smi(SMI_H100)
    assert [g.index for g in gpus] == [0, 1, 2, 3] and not notes
    assert gpus[0] == Gpu(0, "H100", "NVIDIA H100 80GB HBM3", 81559,
                          "GPU-1a2b3c4d-0000-1111-2222-333344445555")
    gpus, _ = parse_nvidia_smi(SMI_MIXED_NOUNITS)  # 3 columns, no units, out of order
    assert [(g.index, g.type, g.memory_mb) for g in gpus] == [(0, "A100-80GB", 81920),
                                                             (1, "V100", 16384)]
    gpus, notes = parse_nvidia_smi("No devices were found\n")
    assert gpus == [] and notes == ["nvidia-smi: No devices were found"]


@pytest.mark.parametrize("name,expected", [
    ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA H100 PCIe", "H100"), ("NVIDIA H200", "H200"),
    ("NVIDIA A100-SXM4-80GB", "A100-80GB"), ("NVIDIA A100 80GB PCIe", "A100-80GB"),
    ("NVIDIA A100-SXM4-40GB", "A100"), ("Tesla V100-SXM2-16GB", "V100"), ("Tesla T4", "T4"),
    ("NVIDIA A10G", "A10G"), ("NVIDIA L4", "L4"), ("NVIDIA L40S", "L40S"),
    ("NVIDIA GeForce RTX 4090", "RTX4090"), ("NVIDIA RTX A6000", "RTXA6000"),
])
def test_gpu_type_names(name, expected):
    assert gpu_type(name) == expected


def test_gpu_matching_is_case_insensitive_and_knows_variants():
    h = Gpu(0, "H100", "NVIDIA H100 80GB HBM3")
    assert gpu_matches("h100", h) and gpu_matches("H100-80GB", h) and not gpu_matches("A100", h)
    a6 = Gpu(0, "RTXA6000", "NVIDIA RTX A6000")
    assert gpu_matches("A6000", a6) and gpu_matches("RTXA6000", a6)
    fake = Gpu(0, "H100", "H100")
    assert gpu_matches("H100", fake)


def test_fake_gpus():
    assert [(g.index, g.type) for g in parse_fake_gpus("H100:2,A100:1")] == [
        (0, "H100"), (1, "H100"), (2, "A100")]
    assert len(parse_fake_gpus("H100:4")) == 4 and parse_fake_gpus("none") == []
    assert len(parse_fake_gpus("L4")) == 1
    with pytest.raises(ResourceConfigError, match="JOBGROUP_FAKE_GPUS: invalid fake GPU list"):
        parse_fake_gpus("H100:x")


def test_config_parsing_and_errors():
    c = parse_config("cpus: 6\nmemory: 12GB\ngpus: [0, 2, 3, 4, 5, 7]\n", "r.yaml")
    assert c == Config(cpus=6, memory_gb=12, gpus=(0, 2, 3, 4, 5, 7))
    assert parse_config("gpus: 2\n", "r.yaml").gpus == 2
    assert parse_config("gpus: none\n", "r.yaml").gpus == 0
    assert parse_config("", "r.yaml") == Config()
    with pytest.raises(ResourceConfigError, match=r"r.yaml: unknown key\(s\) gpu;"):
        parse_config("gpu: 2\n", "r.yaml")
    with pytest.raises(ResourceConfigError, match="r.yaml: invalid gpus"):
        parse_config("gpus: lots\n", "r.yaml")
    with pytest.raises(ResourceConfigError, match="r.yaml: invalid cpus"):
        parse_config("cpus: -1\n", "r.yaml")
    with pytest.raises(ResourceConfigError, match="fake_gpus"):
        parse_config("fake_gpus: 'H100:zero'\n", "r.yaml")


def test_build_applies_the_override():
    eight, _ = parse_nvidia_smi("".join(
        f"{i}, NVIDIA H100 80GB HBM3, 81559 MiB\n" for i in range(8)))
    inv = build(cpus=32, memory_gb=256, gpus=eight, gpu_source="nvidia-smi",
                config=Config(cpus=24, memory_gb=128, gpus=(0, 1, 2, 3, 4, 5)))
    assert inv.cpus == 24 and inv.memory_gb == 128 and inv.machine_cpus == 32
    assert [g.index for g in inv.gpus] == [0, 1, 2, 3, 4, 5]
    assert inv.notes == ("resources.yaml offers 6 of 8 GPU(s)",)
    assert inv.gpu_types() == {"H100": 6}
    assert [g.index for g in build(cpus=1, memory_gb=1, gpus=eight, gpu_source="x",
                                   config=Config(gpus=2)).gpus] == [0, 1]
    with pytest.raises(ResourceConfigError, match="cpus 64 is more than this machine has"):
        build(cpus=32, memory_gb=1, gpus=[], gpu_source="x", config=Config(cpus=64))
    with pytest.raises(ResourceConfigError, match="no GPU with index 9"):
        build(cpus=1, memory_gb=1, gpus=eight, gpu_source="x", config=Config(gpus=(9,)))


def test_detect_with_env_and_file(tmp_path):
    inv = detect(tmp_path, env={FAKE_ENV: "H100:4"})
    assert inv.gpu_source == "fake (JOBGROUP_FAKE_GPUS)" and len(inv.gpus) == 4
    assert inv.cpus >= 1 and inv.memory_gb > 0
    (tmp_path / "resources.yaml").write_text("cpus: 1\nmemory: 512MB\nfake_gpus: A100:8\ngpus: 6\n")
    inv = detect(tmp_path, env={})
    assert inv.gpu_source == "fake (resources.yaml)" and len(inv.gpus) == 6
    assert inv.cpus == 1 and inv.memory_gb == 0.5
    assert "offers 6 of 8" in inv.notes[0]
    # the env wins over the file's fake list (the file's other limits still apply)
    inv = detect(tmp_path, env={FAKE_ENV: "L4:6"})
    assert {g.type for g in inv.gpus} == {"L4"} and inv.cpus == 1
    (tmp_path / "resources.yaml").write_text("cpus: [1]\n")
    with pytest.raises(ResourceConfigError, match="resources.yaml"):
        detect(tmp_path, env={})


def test_detect_on_this_machine_has_no_gpu_without_nvidia_smi(tmp_path, monkeypatch):
    import shutil

    if shutil.which("nvidia-smi"):
        pytest.skip("nvidia-smi exists on this machine")
    inv = detect(tmp_path, env={})
    assert inv.gpus == () and inv.gpu_source in ("none", "nvml")
