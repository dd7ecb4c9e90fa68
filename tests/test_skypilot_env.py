"""The SkyPilot variables a node sees, in SkyPilot's formats (its docs and
sky/backends/task_codegen.py), checked from inside real nodes."""

from __future__ import annotations

import json
import os
import pwd

SPEC = """\
name: envs
execution: parallel
---
name: first
setup: |
  echo "setup-cuda=${CUDA_VISIBLE_DEVICES-unset} setup-gpus=$SKYPILOT_SETUP_NUM_GPUS_PER_NODE"
run: |
  echo "run-cuda=[${CUDA_VISIBLE_DEVICES-unset}]"
  printf 'ids=%s\\n' "$(echo "$SKYPILOT_TASK_IDS" | tr '\\n' ',')"
  echo "id=$SKYPILOT_TASK_ID"
  echo "info=$SKYPILOT_CLUSTER_INFO"
  echo "user=$SKYPILOT_USER uid=$SKYPILOT_USER_ID"
---
name: second
run: echo "id=$SKYPILOT_TASK_ID"
"""


def test_skypilot_variables_in_setup_and_run(jenv):
    job = jenv.launch_d(SPEC)
    assert jenv.wait(job)["status"] == "SUCCEEDED"
    log = jenv.log(job, "first")
    second = jenv.log(job, "second")
    assert "setup-cuda=unset setup-gpus=0" in log  # absent in setup, as SkyPilot unsets it
    assert "run-cuda=[]" in log  # a node without GPUs sees none in run
    first_id = next(l[3:] for l in log.splitlines() if l.startswith("id="))
    second_id = next(l[3:] for l in second.splitlines() if l.startswith("id="))
    assert f"ids={first_id},{second_id}," in log and first_id != second_id
    info = json.loads(next(l[5:] for l in log.splitlines() if l.startswith("info=")))
    assert info == {"cluster_name": f"envs-{job}", "cloud": "local", "region": None,
                    "zone": None}
    me = os.environ.get("USER") or pwd.getpwuid(os.getuid()).pw_name
    line = next(l for l in log.splitlines() if l.startswith("user="))
    user, uid = line.split()
    assert user == f"user={me}" and len(uid) == len("uid=") + 8
