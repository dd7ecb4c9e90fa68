"""A job's stored options in three typed parts, each with one owner (issue 19): the launch's
(written once), the controller's (placement, step, admitted), the backend's facts; in a real
SQLite store, including a row written before the split."""

from __future__ import annotations

import json

import pytest

from jobgroup.state.options import ControllerFields, LaunchOptions, stored
from jobgroup.state.store import Store


def _job(store: Store, options: dict) -> int:
    return store.create_job(name="g", execution="parallel", spec="name: g\nrun: true\n",
                            base_dir="/", options=options, tasks=[("g", 1, True)])


def test_each_part_is_typed_and_has_one_writer(tmp_path):
    store = Store(tmp_path)
    launch = LaunchOptions(env={"A": "1"}, grace=2.5, infra="slurm", best_effort=True)
    job_id = _job(store, stored(launch))
    store.update_controller(job_id, admitted=True, placement_step=1)
    store.record_facts(job_id, {"slurm_job_id": "42", "slurm_nodes": {"0": ["n1"]}})
    rec = store.job(job_id)
    assert rec.launch == launch
    assert rec.controller == ControllerFields(admitted=True, placement_step=1)
    assert rec.facts == {"slurm_job_id": "42", "slurm_nodes": {"0": ["n1"]}}
    with pytest.raises(ValueError, match="not a controller field"):
        store.update_controller(job_id, slurm_job_id="7")
    with pytest.raises(ValueError, match="may not be named like a launch or controller"):
        store.record_facts(job_id, {"grace": 0})  # a backend cannot change what was asked
    with pytest.raises(ValueError, match="may not be named like a launch or controller"):
        store.record_facts(job_id, {"admitted": True})
    assert store.job(job_id).launch.grace == 2.5


def test_a_row_written_before_the_split_reads_the_same(tmp_path):
    store = Store(tmp_path)
    legacy = {"env": {}, "grace": 10, "infra": "kubernetes", "log_max": 0, "base_env": None,
              "gpus_any": False, "cpu_only": True, "placement": None, "k8s_created_at": 12.5}
    job_id = _job(store, legacy)
    with store.write() as c:  # exactly as an older jobgroup stored it
        c.execute("UPDATE jobs SET options=? WHERE id=?", (json.dumps(legacy), job_id))
    rec = store.job(job_id)
    assert rec.launch.grace == 10.0 and rec.launch.cpu_only and rec.launch.infra == "kubernetes"
    assert not rec.launch.best_effort and not rec.launch.no_egress  # absent: the defaults
    assert rec.controller == ControllerFields()
    assert rec.facts == {"k8s_created_at": 12.5}


def test_a_wrongly_typed_field_fails_at_the_read(tmp_path):
    import msgspec

    store = Store(tmp_path)
    job_id = _job(store, {"grace": "soon"})
    with pytest.raises(msgspec.ValidationError):
        _ = store.job(job_id).launch
