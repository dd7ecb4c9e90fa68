"""`jobgroup dashboard`: a local web page and the JSON API behind it.

- `server`     binds the socket and serves the application with Hypercorn (timeouts, shutdown);
- `app`        the Litestar application: the route table (the API under /api/v1 and the first
               release's paths, the pages), the OpenAPI settings (why Litestar: its docstring);
- `routes_api`, `routes_pages`  the handlers; `replies` what they share (ETags, RFC 9457
               problems); `logstream` a job's logs as Server-Sent Events;
- `middleware` every request first: the token, Host and Origin checks, the security headers,
               and bodies handed on only whole (`auth` holds the policy);
- `schemas`    the API's bodies as msgspec Structs (the OpenAPI description is generated from them);
- `views`      JSON-friendly views of the store (jobs, tasks, nodes, events, use) — the API's data;
- `logmerge`   the last lines of several nodes merged in the order they were written;
- `pages`      the server-rendered HTML (jobs page, group page and their live fragments);
- `timeline`   the group's timeline as inline SVG (a pure function of events and nodes);
- `static/`    one small vanilla JS file and one stylesheet (no build step).

Nothing here is imported by the other commands: `jobgroup dashboard` imports it on use.
"""
