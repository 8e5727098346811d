-- auditlock — the five questions an audit trail must answer, for Athena (Trino SQL).
--
-- Create the table and view first: `auditlock athena-ddl --config auditlock.toml` (database `auditlock`,
-- table `events`, view `events_unique`; edit the names below if you chose others).
--
-- Every query is parameterised with `?` and lists its parameters, in order, under "params". Run one with
--     PREPARE record_history FROM <the query>;
--     EXECUTE record_history USING 'Order', '1234', '2026', '2026', '202601', '202612',
--                                  '2026-01-01T00:00:00.000000Z', '2027-01-01T00:00:00.000000Z';
-- or paste it into the console's query editor, which asks for each `?`.
--
-- Every query constrains the partition columns so that partition projection reads only the months asked for:
--   first_year, last_year     'YYYY'    the years of the period            year BETWEEN ? AND ?
--   first_month, last_month   'YYYYMM'  its first and last month           year || month BETWEEN ? AND ?
-- (the year range bounds the projected years; the month range cuts them to the months). Times are compared
-- as strings: `occurred_at` always has the form 2026-11-26T20:14:50.123456Z (UTC), so string order is time
-- order; pass `since`/`until` in that form (`until` is exclusive). `auditlock query` answers the same
-- questions locally; the equivalent command is given with each query.
--
-- hmac'd fields (configured under [targets.X] hmac) hold 'hmac-sha256:<key id>:<hex>' (or 'hmac-sha256:<hex>'
-- under a legacy key without id), never the value: `auditlock hash VALUE` prints its form under every key of
-- the [hmac] keyring, one per line; a query takes them as one comma-separated list (hashed_values), so values
-- written before and after a key rotation are both found: hashed_values = $(auditlock hash VALUE | paste -sd,)


-- name: record_history
-- Who changed this record: every creation, update and deletion of one record, newest first, with the
-- changed fields as {"field": [before, after]}.
-- params: target_type, target_id, first_year, last_year, first_month, last_month, since, until
-- locally: auditlock query --target-type T --target-id ID --type '*.created' --type '*.updated'
--          --type '*.deleted' --since SINCE --until UNTIL
SELECT occurred_at, actor_id, actor_type, actor_ip, event_type,
       json_extract(payload, '$.changes') AS changes, event_id
FROM auditlock.events_unique
WHERE target_type = ? AND target_id = ?
  AND year BETWEEN ? AND ? AND year || month BETWEEN ? AND ?
  AND occurred_at >= ? AND occurred_at < ?
  AND (event_type LIKE '%.created' OR event_type LIKE '%.updated' OR event_type LIKE '%.deleted')
ORDER BY occurred_at DESC, event_id DESC;


-- name: actor_activity
-- Everything an actor did between two dates (a person `user:82`, a service `svc:billing-api`, a job).
-- params: actor_id, first_year, last_year, first_month, last_month, since, until
-- locally: auditlock query --actor ACTOR --since SINCE --until UNTIL
SELECT occurred_at, event_type, target_type, target_id, actor_ip, payload, event_id
FROM auditlock.events_unique
WHERE actor_id = ?
  AND year BETWEEN ? AND ? AND year || month BETWEEN ? AND ?
  AND occurred_at >= ? AND occurred_at < ?
ORDER BY occurred_at DESC, event_id DESC;


-- name: failed_logins
-- Failed logins in the last 24 hours (pass since = now minus 24 h, e.g. the output of
-- `date -u -d '24 hours ago' +%Y-%m-%dT%H:%M:%S.000000Z`; the period is one or two months), by actor and
-- address.
-- params: first_year, last_year, first_month, last_month, since
-- locally: auditlock query --type auth.login_failed --since 24h
SELECT occurred_at, actor_id, actor_ip, json_extract_scalar(payload, '$.reason') AS reason,
       json_extract_scalar(payload, '$.method') AS method, event_id
FROM auditlock.events_unique
WHERE event_type = 'auth.login_failed'
  AND year BETWEEN ? AND ? AND year || month BETWEEN ? AND ?
  AND occurred_at >= ?
ORDER BY occurred_at DESC, event_id DESC;


-- name: permission_changes
-- Every permission change: roles granted and revoked, permissions changed, who did it and to whom.
-- params: first_year, last_year, first_month, last_month, since, until
-- locally: auditlock query --type 'access.*' --since SINCE --until UNTIL
SELECT occurred_at, actor_id, event_type, target_type, target_id,
       json_extract_scalar(payload, '$.role') AS role,
       json_extract_scalar(payload, '$.permission') AS permission,
       json_extract_scalar(payload, '$.scope') AS scope, event_id
FROM auditlock.events_unique
WHERE event_type LIKE 'access.%'
  AND year BETWEEN ? AND ? AND year || month BETWEEN ? AND ?
  AND occurred_at >= ? AND occurred_at < ?
ORDER BY occurred_at DESC, event_id DESC;


-- name: data_subject
-- Everything about one data subject (a GDPR access request): events the person did, events on their own
-- record, and events whose payload holds their identifier in a hashed field (as a value, or on either side
-- of a change) — one hashed field per run, e.g. `email`; run again for `customer_email` and so on.
-- params: actor_id, target_type, target_id, hashed_values, field_path, hashed_values, field_path_before,
--         hashed_values, field_path_after, first_year, last_year, first_month, last_month, since, until
--   For the payload field `email`: field_path '$.email', field_path_before '$.changes.email[0]',
--   field_path_after '$.changes.email[1]'; hashed_values is `auditlock hash alice@example.com | paste -sd,`
--   (every key's form, comma-separated; all three the same).
-- locally, the union of: auditlock query --actor ACTOR ...; auditlock query --target-type T --target-id ID ...;
--          auditlock query --hmac-field email=VALUE ...   (each with --since SINCE --until UNTIL)
SELECT occurred_at, event_type, actor_id, target_type, target_id, payload, event_id
FROM auditlock.events_unique
WHERE (actor_id = ?
       OR (target_type = ? AND target_id = ?)
       OR contains(split(?, ','), json_extract_scalar(payload, ?))
       OR contains(split(?, ','), json_extract_scalar(payload, ?))
       OR contains(split(?, ','), json_extract_scalar(payload, ?)))
  AND year BETWEEN ? AND ? AND year || month BETWEEN ? AND ?
  AND occurred_at >= ? AND occurred_at < ?
ORDER BY occurred_at DESC, event_id DESC;
