"""`jobgroup dashboard`: a local web page and the JSON API behind it.

- `server`   the HTTP server (standard library `ThreadingHTTPServer`), routing, SSE;
- `auth`     who may talk to it: a token on every request, loopback included (`--no-auth` aside);
- `views`    JSON-friendly views of the store (jobs, tasks, nodes, events) — the API's data;
- `pages`    the server-rendered HTML (jobs page, group page and their live fragments);
- `timeline` the group's timeline as inline SVG (a pure function of events and nodes);
- `openapi`  the OpenAPI 3.1 description of the API (served at /api/openapi.json);
- `static/`  one small vanilla JS file and one stylesheet (no build step).

Nothing here is imported by the other commands: `jobgroup dashboard` imports it on use.
"""
