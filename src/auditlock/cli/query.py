"""`auditlock query`: filter the archive (and, with --include-spool, events not yet shipped) with DuckDB.

Exit status: 0 on success (also when nothing matched), 2 for a usage error (the message names the flag and
the problem), 1 when the configuration, the archive or the `query` extra is not usable.

`--prune-cache` runs no query: it trims the cache to its bound (`--cache-max-bytes 0` empties it) and exits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

from auditlock.archive import timerange
from auditlock.archive.timerange import TimeFormatError, TimeRange
from auditlock.config import Config, load_config
from auditlock.errors import AuditlockError
from auditlock.handler.hmac_keys import HmacKeyring
from auditlock.query.errors import UsageError
from auditlock.query.eviction import parse_size, trim
from auditlock.query.filters import FIELD_NAME, EventFilter, HmacMatch
from auditlock.textsafe import error_text

_TYPE_PATTERN = re.compile(r"^[a-z0-9_.*?]+\Z")
_FILTER_FLAGS = ("actor", "target_type", "target_id", "type", "ip", "text", "hmac_field", "limit")
_QUERY_FLAGS = (*_FILTER_FLAGS, "since", "until", "sql", "include_spool")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of query."""
    parser.add_argument("--config", help="config file (default: $AUDITLOCK_CONFIG, else ./auditlock.toml)")
    parser.add_argument("--actor", help="actor_id, e.g. user:82 or svc:billing-api")
    parser.add_argument("--target-type", help="target_type, e.g. Order")
    parser.add_argument("--target-id", help="target_id (always compared as a string)")
    parser.add_argument("--type", action="append", metavar="PATTERN",
                        help="event type or glob (auth.*, *.updated); repeat to match any of several")
    parser.add_argument("--ip", help="actor_ip (exact address)")
    parser.add_argument("--text", help="case-insensitive text anywhere in the payload (names and values), "
                                       "e.g. a request id")
    parser.add_argument("--since", help="start, inclusive: 2026-11-01, 2026-11, RFC 3339, or 24h / 7d ago (UTC)")
    parser.add_argument("--until", help="end, exclusive; a date or month means through its end (UTC)")
    parser.add_argument("--limit", type=_positive_int, help="at most N events (the newest)")
    parser.add_argument("--format", default="table", choices=["table", "jsonl", "csv", "ocsf"],
                        help="output format; ocsf: one OCSF 1.5 record per event (docs/querying.md)")
    parser.add_argument("--include-spool", action="store_true", help="add events still in the local spool")
    parser.add_argument("--sql", help="run this SQL over the view `audit` instead of the filters")
    parser.add_argument("--hmac-field", action="append", metavar="FIELD=VALUE",
                        help="payload FIELD (or either side of changes.FIELD) holds the hmac of VALUE (under any "
                             "key of the [hmac] keyring)")
    parser.add_argument("--cache-dir", type=Path, help="where downloaded objects are kept "
                        "(default: [query] cache_dir, else $XDG_CACHE_HOME/auditlock)")
    parser.add_argument("--cache-max-bytes", type=_size, metavar="SIZE",
                        help="bound of the cache: bytes, or with K/M/G/T, e.g. 10G (default: [query] "
                             "cache_max_bytes, else 10G); the least recently used objects go beyond it")
    parser.add_argument("--prune-cache", action="store_true",
                        help="run no query: trim the cache to its bound (--cache-max-bytes 0 empties it)")


def run(args: argparse.Namespace) -> int:
    """Run the query; see the module docstring for the exit status."""
    try:
            from auditlock.query.session import QueryRequest, execute  # noqa: PLC0415 - duckdb/boto3 on use only
    except ImportError as exc:
        print(f"auditlock query needs the 'query' extra: pip install 'auditlock[query]' ({exc})", file=sys.stderr)
        return 1
    if args.prune_cache:
        return _prune(args)
    try:
        time_range = parse_range(args.since, args.until, dt.datetime.now(dt.UTC))
        _check_combinations(args)
        hmac_pairs = _hmac_pairs(args.hmac_field or ())
        event_filter = build_filter(args, time_range)
        config = load_config(args.config)
        if hmac_pairs:
            event_filter = replace(event_filter, hmac=_hash(hmac_pairs, config))
        request = QueryRequest(filter=event_filter, cache_dir=_cache_dir(args, config), sql=args.sql,
                               fmt=args.format, limit=args.limit, include_spool=args.include_spool,
                               cache_max_bytes=args.cache_max_bytes)
        execute(request, config, sys.stdout, sys.stderr)
    except UsageError as exc:
        print(f"auditlock query: error: {error_text(exc)}", file=sys.stderr)
        return 2
    except AuditlockError as exc:
        print(f"auditlock query: {error_text(exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `auditlock query ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _prune(args: argparse.Namespace) -> int:
    """`--prune-cache`: trim the cache (waiting for running queries to end) and say what it removed."""
    try:
        for name in _QUERY_FLAGS:
            if getattr(args, name) not in (None, [], False):
                raise UsageError("--prune-cache", f"cannot be combined with --{name.replace('_', '-')}: it runs "
                                                  "no query (only --config, --cache-dir, --cache-max-bytes apply)")
        config = load_config(args.config)
        cache_dir = _cache_dir(args, config)
        max_bytes = config.query.cache_max_bytes if args.cache_max_bytes is None else args.cache_max_bytes
        report = trim(cache_dir, max_bytes, wait=True) if cache_dir.is_dir() else None
    except UsageError as exc:
        print(f"auditlock query: error: {error_text(exc)}", file=sys.stderr)
        return 2
    except AuditlockError as exc:
        print(f"auditlock query: {error_text(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"auditlock query: cannot prune the cache {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return 1
    if report is None:
        print(f"auditlock query: no cache at {cache_dir}; nothing to prune")
    else:
        print(f"auditlock query: cache {cache_dir}: removed {report.removed} objects ({_mib(report.removed_bytes)}), "
              f"kept {report.kept} ({_mib(report.kept_bytes)}; bound {_mib(max_bytes)})")
    return 0


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def parse_range(since: str | None, until: str | None, now: dt.datetime) -> TimeRange:
    """The `--since`/`--until` range; a bad value is a usage error naming its flag."""
    try:
        return timerange.parse_range(since, until, now)
    except TimeFormatError as exc:
        raise UsageError(exc.flag or "--since", str(exc)) from exc


def build_filter(args: argparse.Namespace, time_range: TimeRange) -> EventFilter:
    """The event filter of the flags (without hmac matches, which need the config's key)."""
    return EventFilter(actor=args.actor, target_type=args.target_type, target_id=args.target_id,
                       types=tuple(_type_pattern(t) for t in args.type or ()), ip=_ip(args.ip),
                       text=_text(args.text), time_range=time_range)


def _check_combinations(args: argparse.Namespace) -> None:
    if args.sql is None:
        return
    if args.format == "ocsf":
        raise UsageError("--format", "ocsf maps whole events; it cannot be combined with --sql")
    if not args.sql.strip():
        raise UsageError("--sql", "is empty; give a query such as \"SELECT count(*) FROM audit\"")
    for name in _FILTER_FLAGS:
        if getattr(args, name) not in (None, []):
            flag = "--" + name.replace("_", "-")
            raise UsageError("--sql", f"cannot be combined with {flag}; write that condition into the SQL "
                                      "(only --since/--until, --include-spool and --format apply to the view)")


def _text(text: str | None) -> str | None:
    if text is not None and not text.strip():
        raise UsageError("--text", "is empty; give the text to look for in payloads")
    return text


def _type_pattern(pattern: str) -> str:
    if not _TYPE_PATTERN.match(pattern):
        raise UsageError("--type", f"{pattern!r} is not an event type or glob: event types are lowercase letters, "
                                   "digits, '_' and '.' (order.updated); a glob may use * and ?")
    return pattern


def _ip(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        ipaddress.ip_address(text)
    except ValueError as exc:
        raise UsageError("--ip", f"{text!r} is not an IPv4 or IPv6 address") from exc
    return text


def _hmac_pairs(items: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not FIELD_NAME.match(field):
            raise UsageError("--hmac-field", f"{item!r} is not FIELD=VALUE with FIELD a payload field name "
                                             "(letters, digits, '_'), e.g. email=alice@example.com")
        pairs.append((field, value))
    return pairs


def _hash(pairs: list[tuple[str, str]], config: Config) -> tuple[HmacMatch, ...]:
    """Hash each VALUE as `auditlock hash` does: under every key of the config's [hmac] keyring."""
    keyring = HmacKeyring.load(config.hmac)
    return tuple(HmacMatch(field, keyring.candidates(value)) for field, value in pairs)


def _cache_dir(args: argparse.Namespace, config: Config) -> Path:
    """`--cache-dir`, else `[query] cache_dir`, else the XDG default."""
    from auditlock.query.cache import default_cache_dir  # noqa: PLC0415 - boto3 only once the query runs

    return args.cache_dir or config.query.cache_dir or default_cache_dir()


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive; give 1 or more")
    return value
