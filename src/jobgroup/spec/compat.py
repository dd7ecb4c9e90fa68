"""What of SkyPilot's task schema jobgroup accepts without acting on it, and what it says.

SkyPilot's loader (`sky/utils/schemas.py`, `sky/task.py`) accepts these fields; so does jobgroup
(DESIGN principle 7), with one warning per field and document saying it is ignored and why. The
fields in `IGNORED_TASK` / `IGNORED_RESOURCES` are kept in the models (they round-trip through
`dump`); the ones in `DROPPED_*` are SkyPilot's internal bookkeeping (written by its own dumps,
never by users) and are dropped by the loader after the warning.
"""

from __future__ import annotations

from typing import Any

# task field -> why jobgroup ignores it (the loader prefixes "ignored: ")
IGNORED_TASK: dict[str, str] = {
    "service": "a SkyServe section; like `sky jobs launch`, jobgroup runs only the task part "
               "(run the server as a task of a job group, with a readiness_probe)",
    "pool": "a SkyPilot worker-pool section; like `sky jobs launch`, jobgroup runs only the "
            "task part",
    "inputs": "SkyPilot's optimizer hint (data size, for egress costs); jobgroup does not "
              "choose clouds",
    "outputs": "SkyPilot's optimizer hint (data size, for egress costs); jobgroup does not "
               "choose clouds",
    "api_server_access": "there is no SkyPilot API server to give the task access to",
    "volume_mounts": "SkyPilot's resolved form of `volumes` (written by its own dumps); write "
                     "`volumes:` instead",
    "config": "SkyPilot configuration overrides (e.g. kubernetes.pod_config) do not apply to "
              "jobgroup's backends",
    "event_callback": "jobgroup does not run event callbacks; `jobgroup events`/`wait` report "
                      "a group's events",
}
IGNORED_RESOURCES: dict[str, str] = {
    "priority": "jobgroup admits groups in submission order",
    "priority_class": "jobgroup admits groups in submission order",
    "local_disk": "jobgroup does not choose instance types",
    "ephemeral_storage": "jobgroup does not reserve disk (SkyPilot's old name of disk_size)",
    "volumes": "SkyPilot's per-instance disks; use the task's `volumes:` for shared storage",
}
# SkyPilot's internal fields (its dumps write them); dropped after a warning.
DROPPED_TASK = frozenset({"_metadata", "file_mounts_mapping", "_user_specified_yaml"})
DROPPED_RESOURCES = frozenset({
    "_no_missing_accel_warnings", "_docker_login_config", "_is_image_managed", "_requires_fuse",
    "_cluster_config_overrides",
})
# Consumed by the loader: each entry becomes a secret to be given at launch.
MANAGED_SECRETS = "managed_secrets"
# Everything a task document may hold according to SkyPilot, for "did you mean".
SKYPILOT_TASK_KEYS = frozenset(IGNORED_TASK) | DROPPED_TASK | {MANAGED_SECRETS}

# Storage (a `file_mounts` value given as a mapping): SkyPilot's keys and enumerations.
STORAGE_KEYS = ("name", "source", "store", "persistent", "mode", "type", "config",
                "_is_sky_managed", "_bucket_sub_path", "_force_delete")
STORES = ("S3", "GCS", "AZURE", "R2", "IBM", "OCI", "NEBIUS", "COREWEAVE", "VASTDATA", "HF",
          "VOLUME")
STORAGE_MODES = ("MOUNT", "COPY", "MOUNT_CACHED")
# A `volumes` value given as a mapping: an existing volume, or a new one made for the job.
VOLUME_REF_KEYS = ("name", "sub_path")
VOLUME_NEW_KEYS = ("size", "type", "labels", "config")
EPHEMERAL_VOLUME_TYPES = ("k8s-pvc",)


def ignored_message(field: str, why: str) -> str:
    return f"'{field}' is accepted (SkyPilot's schema has it) but ignored: {why}"


def is_empty(value: Any) -> bool:
    """Whether a field's value says nothing (absent, null, {} or []): no warning then."""
    return value is None or value == {} or value == []


def secret_ref_name(raw: str) -> str:
    """SkyPilot's managed secret reference ``[secrets:][personal.|workspace.|global.]NAME`` ->
    NAME (the environment variable the task sees)."""
    if raw.startswith("secrets:"):
        raw = raw[len("secrets:"):]
    for prefix in ("personal.", "workspace.", "global."):
        if raw.startswith(prefix):
            return raw[len(prefix):]
    return raw
