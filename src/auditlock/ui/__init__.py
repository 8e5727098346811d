"""The admin view (`auditlock ui`, extra `ui`): search the archive in a browser; every access is itself audited.

Room map (imports flow cli → ui → query/handler/config; nothing outside imports this room but `cli.ui`):

- `auth`        who is looking: password users (argon2), a bearer token, or a trusted proxy's header
- `sessions`    what the session cookie holds (actor, id, issued-at, credential stamp) and when it is honoured
- `revocations` sessions ended by a logout (memory, or `[ui] revoked_sessions_dir` shared by replicas)
- `access_log`  the view's own audit events (`audit_log.searched` …), written fail-closed through `AuditCore`
- `refusals`    failed logins into the trail at a bounded rate (a flood becomes `auth.login_failed_summary`)
- `navigation`  only the viewer's own navigations are recorded in their name (Fetch Metadata)
- `search`      the search form's query string → the query room's `EventFilter`
- `reader`      the archive through the query room (cache, DuckDB view, keyset pages, CSV/JSONL output)
- `present`     how an event reads on screen (summary line, before/after table, raw JSON)
- `views`       the pages; `app` the Starlette application; `server` binds it (uvicorn), refusing unsafe binds
- `templates/`, `static/`  server-rendered HTML and one stylesheet; no JavaScript anywhere

This package's `__init__` imports nothing.
"""
