"""The JSON Schema agrees with the models and the loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jobgroup.spec.models import Header, JobRecovery, Resources, Task
from jobgroup.spec.schema import json_schema

REPO = Path(__file__).resolve().parents[2]


def test_schema_covers_every_model_field() -> None:
    defs = json_schema()["definitions"]
    assert set(defs["Header"]["properties"]) == set(Header.__struct_fields__)
    assert set(defs["Task"]["properties"]) == \
        set(Task.__struct_fields__) - {"unfilled_envs", "unfilled_secrets"} | {"managed_secrets"}
    assert set(defs["Resources"]["properties"]) == set(Resources.__struct_fields__) | {"gpus"}
    assert set(defs["JobRecovery"]["properties"]) == set(JobRecovery.__struct_fields__)
    for d in defs.values():
        assert d["additionalProperties"] is False
    assert defs["Task"]["properties"]["num_nodes"]["minimum"] == 1
    assert "description" in defs["Header"]["properties"]["primary_tasks"]


def test_examples_and_bad_documents_against_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft7Validator(json_schema())
    for path in sorted((REPO / "examples").glob("*/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert list(validator.iter_errors(doc)) == [], path
    for bad in ({"name": "t", "runn": "x"}, {"num_nodes": 0}, {"resources": {"cpus": "x"}},
                {"execution": "parallel", "termination_delay": "5 minutes"}):
        assert list(validator.iter_errors(bad)), bad
