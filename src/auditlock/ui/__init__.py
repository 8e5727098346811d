"""The admin view (`auditlock ui`, extra `ui`): search the archive in a browser; every access is itself audited.

Room map (imports flow cli → ui → query/handler/config; nothing outside imports this room but `cli.ui`):

- `auth`        who is looking: password users (argon2), a bearer token, or a trusted proxy's header
- `access_log`  the view's own audit events (`audit_log.searched` …), written fail-closed through `AuditCore`
- `search`      the search form's query string → the query room's `EventFilter`
- `reader`      the archive through the query room (cache, DuckDB view, keyset pages, CSV/JSONL output)
- `present`     how an event reads on screen (summary line, before/after table, raw JSON)
- `views`       the pages; `app` the Starlette application; `server` binds it (uvicorn), refusing unsafe binds
- `templates/`, `static/`  server-rendered HTML and one stylesheet; no JavaScript anywhere

This package's `__init__` imports nothing.
"""
