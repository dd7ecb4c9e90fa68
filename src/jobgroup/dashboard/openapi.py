"""The OpenAPI 3.1 description of the dashboard's HTTP API (GET /api/openapi.json).

`tests/test_dashboard_api.py` checks that every route the server answers is described here and
that every path described here is answered."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(_ERROR, description)


_JOB_ID = {"name": "job_id", "in": "path", "required": True,
           "schema": {"type": "integer", "minimum": 1}}
_TASK = {"name": "task", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "a task by index or name (like `jobgroup logs JOB TASK`); all tasks if absent"}
_RANK = {"name": "rank", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 0}, "description": "only the node with this rank"}
_COMMON_ERRORS = {"401": _err("the token (every request needs it) was missing or wrong"),
                  "404": _err("no such job or task")}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "jobgroup dashboard API",
        "version": "1",
        "description": (
            "The data and verbs of the `jobgroup` CLI over HTTP: launch from a posted YAML, queue,"
            " job, events, logs (Server-Sent Events), cancel.\n\n"
            "Security: every request needs the token of `$JOBGROUP_HOME/dashboard.token` (mode "
            "0600), on every address, loopback included: as `Authorization: Bearer TOKEN`, or "
            "as `?token=TOKEN` in the URL (on a page it signs a browser in: an HttpOnly, "
            "SameSite=Strict cookie that lasts as long as this server runs). Only "
            "`jobgroup dashboard --no-auth`, on a loopback address, serves without it. Bound to "
            "a loopback address, the `Host` header must name it (DNS rebinding); requests that "
            "change state are refused (403) when their `Origin` is another site.\n\n"
            "Only complete requests are acted on: a body shorter than its Content-Length is "
            "answered 400 (408 when it stalls) and nothing is done. A whole request must arrive "
            "within the server's timeout (30 s), or the connection is closed; so is an idle "
            "keep-alive connection. GET responses carry an ETag; send `If-None-Match` to get 304 "
            "when nothing changed."
        ),
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "token": {"type": "apiKey", "in": "query", "name": "token"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": "jobgroup_dashboard_PORT",
                       "description": "set by a page opened with ?token= (PORT: the server's)"},
        },
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"},
                "problems": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}},
            }},
            "Problem": {"type": "object", "properties": {
                "file": {"type": "string"}, "line": {"type": ["integer", "null"]},
                "col": {"type": ["integer", "null"]}, "where": {"type": "string"},
                "path": {"type": "string"}, "message": {"type": "string"},
                "severity": {"enum": ["error", "warning"]}, "text": {"type": "string"},
            }},
            "Task": {"type": "object", "properties": {
                "index": {"type": "integer"}, "name": {"type": "string"},
                "status": {"type": "string"}, "reason": {"type": "string"},
                "num_nodes": {"type": "integer"}, "primary": {"type": "boolean"},
                "restarts": {"type": "integer"}, "started_at": {"type": ["number", "null"]},
                "ended_at": {"type": ["number", "null"]}, "duration": {"type": ["number", "null"]},
                "readiness_probe": {"type": "boolean"},
                "nodes": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
            }},
            "Node": {"type": "object", "properties": {
                "task": {"type": "string"}, "task_index": {"type": "integer"},
                "rank": {"type": "integer"},
                "phase": {"enum": ["waiting", "setup", "ready", "run", "ended"]},
                "hostname": {"type": "string"}, "address": {"type": "string"},
                "attempt": {"type": "integer"}, "restarts": {"type": "integer"},
                "started_at": {"type": ["number", "null"]}, "ended_at": {"type": ["number", "null"]},
                "ready_at": {"type": ["number", "null"]},
                "readiness": {"type": "string",
                              "description": "ready, waiting, started (no probe), failed: WHY, -"},
                "exit_code": {"type": ["integer", "null"]}, "signal": {"type": ["integer", "null"]},
                "stopped": {"type": "boolean"}, "exit": {"type": "string"},
            }},
            "Job": {"type": "object", "properties": {
                "id": {"type": "integer"}, "name": {"type": "string"},
                "status": {"type": "string", "description": "SkyPilot's names: PENDING, STARTING,"
                           " RUNNING, RECOVERING, CANCELLING, SUCCEEDED, CANCELLED, FAILED, ..."},
                "reason": {"type": "string"}, "execution": {"enum": ["parallel", "serial"]},
                "submitted_at": {"type": "number"}, "started_at": {"type": ["number", "null"]},
                "ended_at": {"type": ["number", "null"]}, "duration": {"type": ["number", "null"]},
                "num_tasks": {"type": "integer"}, "num_nodes": {"type": "integer"},
                "restarts": {"type": "integer"}, "group_restarts": {"type": "integer"},
                "cancel_requested": {"type": "boolean"}, "isolation": {"type": "string"},
                "done": {"type": "boolean"},
                "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
            }},
            "Event": {"type": "object", "properties": {
                "id": {"type": "integer"}, "at": {"type": "number"}, "kind": {"type": "string"},
                "message": {"type": "string"}, "task": {"type": ["string", "null"]},
                "rank": {"type": ["integer", "null"]},
            }},
            "LogLine": {"type": "object", "properties": {
                "task": {"type": "string"}, "rank": {"type": "integer"},
                "attempt": {"type": "integer"}, "text": {"type": "string"},
                "more": {"type": "boolean", "description": "a piece of a line longer than 1 MiB"
                         " (cut between characters); the node's next piece goes on with it"},
                "prefix": {"type": "string", "description": "`(task, rank=N)` as `jobgroup logs`"
                           " prints it (`(task, rank=N, attempt=K)` for later attempts)"},
            }},
            "LaunchRequest": {"type": "object", "required": ["spec"], "properties": {
                "spec": {"type": "string", "description": "the job-group YAML"},
                "name": {"type": "string", "description": "like `launch --name`"},
                "env": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "like `launch --env K=V`"},
            }},
        },
    },
    "security": [{"bearer": []}, {"token": []}, {"cookie": []}],
    "paths": {
        "/api/jobs": {
            "get": {
                "summary": "Every job, newest first (like `jobgroup queue --all --json`)",
                "parameters": [{"name": "status", "in": "query", "schema": {"type": "string"},
                                "description": "all, active, ended, failed or a status"}],
                "responses": {"200": _json({"type": "object", "properties": {"jobs": {
                    "type": "array", "items": {"$ref": "#/components/schemas/Job"}}}}, "jobs"),
                    "304": {"description": "not modified (If-None-Match)"},
                    "400": _err("unknown status filter"), "401": _COMMON_ERRORS["401"]},
            },
            "post": {
                "summary": "Launch a job group from a posted YAML (like `jobgroup launch -d`)",
                "description": "The body is the YAML itself (application/yaml, text/yaml, "
                               "text/plain) or a LaunchRequest (application/json). It is "
                               "validated exactly as the CLI does. At most 1 MiB.",
                "requestBody": {"required": True, "content": {
                    "application/yaml": {"schema": {"type": "string"}},
                    "application/json": {"schema": {"$ref": "#/components/schemas/LaunchRequest"}},
                }},
                "responses": {
                    "201": _json({"type": "object", "properties": {
                        "job": {"$ref": "#/components/schemas/Job"},
                        "warnings": {"type": "array", "items": {"type": "string"}}}},
                        "launched (PENDING); Location names the job"),
                    "400": _err("invalid spec (`problems` lists every problem), bad request, "
                                "or a body shorter than its Content-Length"),
                    "401": _COMMON_ERRORS["401"], "403": _err("cross-site request"),
                    "408": _err("the body did not arrive in time"),
                    "411": _err("Content-Length required"), "413": _err("body over 1 MiB"),
                },
            },
        },
        "/api/validate": {
            "post": {
                "summary": "Validate a spec without launching it (like `jobgroup validate --json`)",
                "requestBody": {"required": True, "content": {
                    "application/yaml": {"schema": {"type": "string"}}}},
                "responses": {
                    "200": _json({"type": "object", "properties": {
                        "valid": {"type": "boolean"},
                        "problems": {"type": "array",
                                     "items": {"$ref": "#/components/schemas/Problem"}}}},
                        "the verdict"),
                    "400": _err("a body shorter than its Content-Length"),
                    "401": _COMMON_ERRORS["401"], "408": _err("the body did not arrive in time"),
                    "413": _err("body over 1 MiB"),
                },
            },
        },
        "/api/jobs/cancel": {
            "post": {
                "summary": "Cancel several jobs, or every job (like `jobgroup cancel JOB... | --all`)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "properties": {
                        "ids": {"type": "array", "items": {"type": "integer"}},
                        "all": {"type": "boolean"}}}}}},
                "responses": {
                    "200": _json({"type": "object", "properties": {"results": {
                        "type": "object", "additionalProperties": {"type": "string"}}}},
                        "{job id: 'cancelling' | 'already ended (STATUS)'}"),
                    "400": _err("bad request, or a body shorter than its Content-Length"),
                    "408": _err("the body did not arrive in time"), **_COMMON_ERRORS,
                },
            },
        },
        "/api/jobs/{job_id}": {
            "get": {
                "summary": "One job with its tasks and every node",
                "parameters": [_JOB_ID],
                "responses": {"200": _json({"$ref": "#/components/schemas/Job"}, "the job"),
                              "304": {"description": "not modified"}, **_COMMON_ERRORS},
            },
        },
        "/api/jobs/{job_id}/events": {
            "get": {
                "summary": "The job's timeline (like `jobgroup events JOB --json`)",
                "parameters": [_JOB_ID, {"name": "after", "in": "query",
                                         "schema": {"type": "integer"},
                                         "description": "only events with a larger id"}],
                "responses": {"200": _json({"type": "object", "properties": {"events": {
                    "type": "array", "items": {"$ref": "#/components/schemas/Event"}}}},
                    "events, oldest first"), **_COMMON_ERRORS},
            },
        },
        "/api/jobs/{job_id}/logs": {
            "get": {
                "summary": "The log lines there are now (like `jobgroup logs JOB [TASK] --no-follow`)",
                "parameters": [_JOB_ID, _TASK, _RANK,
                               {"name": "tail", "in": "query",
                                "schema": {"type": "integer", "minimum": 1},
                                "description": "the last N lines of each node, read from the "
                                               "end of its files (default 10000); at most 4 MiB "
                                               "of text in all (the oldest go first)"}],
                "responses": {"200": _json({"type": "object", "properties": {
                    "lines": {"type": "array", "items": {"$ref": "#/components/schemas/LogLine"}},
                    "truncated": {"type": "boolean"}}}, "lines"),
                    "400": _err("bad parameter"), **_COMMON_ERRORS},
            },
        },
        "/api/jobs/{job_id}/logs/stream": {
            "get": {
                "summary": "Follow the logs as Server-Sent Events (like `jobgroup logs JOB [TASK]`)",
                "description": "Events: `start` (data: {\"width\": N}, the prefix width), then one "
                               "unnamed event per line (data: a LogLine), then `end` once the "
                               "selected tasks have ended. Comments keep the connection alive.",
                "parameters": [_JOB_ID, _TASK, _RANK,
                               {"name": "tail", "in": "query",
                                "schema": {"type": "integer", "minimum": 0},
                                "description": "start with the last N lines of each node "
                                               "(default 10000; 0: only new lines)"}],
                "responses": {"200": {"description": "the stream",
                                      "content": {"text/event-stream": {}}},
                              "400": _err("bad parameter"), **_COMMON_ERRORS,
                              "503": _err("too many streams open")},
            },
        },
        "/api/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel the job (like `jobgroup cancel JOB`)",
                "parameters": [_JOB_ID],
                "responses": {"200": _json({"type": "object", "properties": {
                    "id": {"type": "integer"}, "result": {"type": "string"}}},
                    "'cancelling' or 'already ended (STATUS)'"),
                    "403": _err("cross-site request"), **_COMMON_ERRORS},
            },
        },
        "/api/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}},
        },
    },
}
