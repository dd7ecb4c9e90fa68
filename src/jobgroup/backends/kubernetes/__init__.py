"""The kubernetes backend: a job group as Pods + a headless Service (see `render`).

    render_objects(group, job_id=0, config=None, *, base_dir=None, env=None) -> list[dict]
    render_yaml(group, job_id=0, config=None, *, base_dir=None, env=None) -> str
    pvc_object(name, size=None, config=None) -> dict
    problems(group, config) -> list[str];  warnings(group) -> list[str]
    load_config(home=None) -> KubernetesConfig     ($JOBGROUP_HOME/kubernetes.yaml)
    KubernetesBackend (backend.py) needs the `kubernetes` client (pip install jobgroup[kubernetes]),
    imported only when a backend is created.

Rendering is pure and needs no cluster and no client library.
"""

from jobgroup.backends.kubernetes.config import KubernetesConfig, load_config, parse_config
from jobgroup.backends.kubernetes.render import (
    RenderError, problems, pvc_object, render_objects, render_yaml, to_yaml, warnings,
)

__all__ = [
    "KubernetesConfig", "RenderError", "load_config", "parse_config", "problems", "pvc_object",
    "render_objects", "render_yaml", "to_yaml", "warnings",
]
