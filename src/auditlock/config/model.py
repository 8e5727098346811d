"""The typed, immutable configuration that handler, agent and tools share.

`auditlock.config.load` builds these from `auditlock.toml`; nothing else constructs them from files.
Tests and embedders may construct them directly (`Config(service=..., spool=SpoolConfig(dir=...), ...)`).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from auditlock.errors import ConfigError

Durability = Literal["sync", "group", "process"]
OnError = Literal["raise", "drop"]
LockMode = Literal["COMPLIANCE", "GOVERNANCE"]
UiAuth = Literal["password", "token", "header"]


@dataclass(frozen=True)
class SpoolConfig:
    """`[spool]`: where and how the in-process writer makes events durable."""

    dir: Path
    durability: Durability = "group"
    flush_interval_ms: int = 200
    segment_max_bytes: int = 16 * 1024 * 1024
    segment_max_age_s: float = 60.0
    max_bytes: int = 1024 * 1024 * 1024
    on_error: OnError = "raise"
    warn_fraction: float = 0.8
    commit_delay_us: int = 50  # durability "sync": the group commit's delay (spool.commit)


@dataclass(frozen=True)
class EventsConfig:
    """`[events]`: which event names are audit events and how large one may be."""

    include: tuple[str, ...] = ()
    keep_in_app_log: bool = False
    max_event_bytes: int = 65536

    def matches(self, event_type: str) -> bool:
        """Whether an event name is an audit event (matches one of the `include` globs)."""
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.include)


@dataclass(frozen=True)
class TargetConfig:
    """`[targets.<TargetType>]`: the payload allowlist and policy of one record type."""

    fields: frozenset[str] = frozenset()
    hmac: frozenset[str] = frozenset()
    retention: str | None = None
    sensitive_reads: bool = False
    erasable: frozenset[str] = frozenset()  # a subset of `fields`: written encrypted under the subject's data key
    subject: str | None = None  # "<Type>:<field>": whose data the values are; None: the target itself
    table: str | None = None  # "schema.table" captured from the WAL by `auditlock capture`
    columns: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # column -> field name

    @property
    def allowed(self) -> frozenset[str]:
        """Every payload field that may be written (hmac fields are written in hashed form)."""
        return self.fields | self.hmac

    @property
    def subject_field(self) -> tuple[str, str] | None:
        """`(subject type, field)` of `subject = "<Type>:<field>"`, or None when the target is the subject."""
        if self.subject is None:
            return None
        kind, _, name = self.subject.partition(":")
        return kind, name


@dataclass(frozen=True)
class HmacKeySource:
    """Where one hmac key comes from: an environment variable or a file (exactly one of them)."""

    key_env: str | None = None
    key_file: Path | None = None

    def load(self, where: str) -> bytes:
        """Read the key; a `ConfigError` names `where` (e.g. `[hmac.keys.k2]`) and the source, never the key."""
        if self.key_env is not None:
            value = os.environ.get(self.key_env, "")
            if not value:
                raise ConfigError(
                    f"{where} key_env: environment variable {self.key_env} is not set or empty; "
                    "set it to the hmac secret (at least 16 characters)"
                )
            return value.encode()
        if self.key_file is not None:
            return _read_key_file(self.key_file, where)
        raise ConfigError(f"{where}: no key configured; set key_env or key_file")


@dataclass(frozen=True)
class HmacConfig:
    """`[hmac]`: the keys of hashed fields — a keyring `[hmac.keys.<id>]` with the `current` key's id, and/or the
    id-less legacy key `key_env`/`key_file` (values `hmac-sha256:<hex>`, still readable after a rotation)."""

    key_env: str | None = None
    key_file: Path | None = None
    current: str | None = None
    keys: Mapping[str, HmacKeySource] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def legacy(self) -> HmacKeySource | None:
        """The id-less key of `[hmac] key_env`/`key_file`, if configured."""
        if self.key_env is None and self.key_file is None:
            return None
        return HmacKeySource(self.key_env, self.key_file)

    @property
    def configured(self) -> bool:
        """Whether a key source is configured at all."""
        return self.legacy is not None or bool(self.keys)

    @property
    def current_id(self) -> str | None:
        """The id new values are hashed under (None: the legacy key, whose values carry no id)."""
        return self.current if self.keys else None

    def load_current(self) -> tuple[str | None, bytes]:
        """The current key's id and bytes — all an application needs (old keys are for readers only)."""
        if self.keys:
            if self.current is None or self.current not in self.keys:
                raise ConfigError("[hmac] current must name one of [hmac.keys] "
                                  f"({', '.join(sorted(self.keys))}): the key new values are hashed under")
            return self.current, self.keys[self.current].load(f"[hmac.keys.{self.current}]")
        if self.legacy is not None:
            return None, self.legacy.load("[hmac]")
        raise ConfigError("[hmac]: no key configured; set key_env or key_file, or [hmac.keys.<id>] and current")

    def load_keys(self) -> dict[str | None, bytes]:
        """Every key by id (None for the legacy key), the current one first; a `ConfigError` names a missing one."""
        current_id, current = self.load_current()
        found: dict[str | None, bytes] = {current_id: current}
        for key_id, source in sorted(self.keys.items()):
            if key_id != current_id:
                found[key_id] = source.load(f"[hmac.keys.{key_id}]")
        if self.legacy is not None and current_id is not None:
            found[None] = self.legacy.load("[hmac]")
        return found

    def load_key(self) -> bytes:
        """The current key's bytes (the one new values are hashed under)."""
        return self.load_current()[1]


def _read_key_file(path: Path, where: str = "[hmac]") -> bytes:
    return _read_secret_file(path, f"{where} key_file", "write the hmac secret into it")


def _read_secret_file(path: Path, source: str, fill_it: str) -> bytes:
    """A secret file's content without surrounding whitespace; a `ConfigError` names `source` (e.g. `[hmac]
    key_file`) and the file when it cannot be read or is empty, never the content."""
    try:
        value = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read {path}: {exc.strerror}") from exc
    if not value:
        raise ConfigError(f"{source}: {path} is empty; {fill_it}")
    return value


@dataclass(frozen=True)
class RetentionClass:
    """`[retention.classes.<name>]`: how long objects are locked, in which mode, and how long kept hot."""

    days: int
    mode: LockMode = "COMPLIANCE"
    hot_days: int | None = None


@dataclass(frozen=True)
class RetentionConfig:
    """`[retention]`: named classes, the default class, and event-type patterns mapped to classes."""

    default: str
    classes: Mapping[str, RetentionClass]
    events: tuple[tuple[str, str], ...] = ()

    def class_for(self, event_type: str, target: TargetConfig | None) -> str:
        """The class of an event: first matching event pattern, else the target's class, else the default."""
        for pattern, name in self.events:
            if fnmatch.fnmatchcase(event_type, pattern):
                return name
        if target is not None and target.retention is not None:
            return target.retention
        return self.default


@dataclass(frozen=True)
class SinkConfig:
    """`[sink]`: the S3 bucket the agent ships to and how it batches."""

    bucket: str | None = None
    prefix: str = "auditlock"
    region: str | None = None
    endpoint_url: str | None = None
    batch_max_bytes: int = 64 * 1024 * 1024
    batch_max_age_s: float = 60.0
    kms_key_id: str | None = None
    read_timeout_s: float = 60.0


@dataclass(frozen=True)
class AgentConfig:
    """`[agent]`: the sidecar's own settings (HTTP endpoint, shutdown, safety-net rescans)."""

    http_host: str = "127.0.0.1"
    http_port: int = 9464
    grace_period_s: float = 25.0
    rescan_interval_s: float = 30.0
    state_dir: Path | None = None
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    signing_key_file: Path | None = None


@dataclass(frozen=True)
class UiConfig:
    """`[ui]`: the admin view (`auditlock ui`): where it listens and how viewers authenticate.

    `auth` is optional here (handler and agent never read `[ui]`); `auditlock ui` refuses to start without it.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    auth: UiAuth | None = None
    users: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # name -> argon2 hash
    token_env: str | None = None
    token_file: Path | None = None
    token_actor: str = "svc:auditlock-ui-token"  # noqa: S105 - an actor id, not a secret
    trusted_header: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    session_max_age_s: int = 8 * 3600
    session_key_file: Path | None = None  # signs session cookies; None: a new key at every start
    revoked_sessions_dir: Path | None = None  # logouts shared by replicas; None: each replica remembers its own
    page_size: int = 50
    cache_dir: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    allow_insecure_http: bool = False
    secure_cookies: bool = False  # mark the session cookie Secure without TLS here (HTTPS ends at a proxy)
    root_path: str = ""  # the path prefix a reverse proxy serves the view under, e.g. "/audit"

    def load_token(self) -> str:
        """The bearer token from `token_env` or `token_file`; a `ConfigError` names the source that failed."""
        if self.token_env is not None:
            value = os.environ.get(self.token_env, "").strip()
            where = f"[ui] token_env: environment variable {self.token_env}"
        elif self.token_file is not None:
            try:
                value = self.token_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"[ui] token_file: cannot read {self.token_file}: {exc.strerror}") from exc
            where = f"[ui] token_file: {self.token_file}"
        else:
            raise ConfigError('[ui] auth = "token" needs token_env or token_file')
        if len(value) < MIN_TOKEN_CHARS:
            raise ConfigError(f"{where} holds {len(value)} characters; use a random token of at least "
                              f"{MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 32`)")
        return value

    def load_session_key(self) -> str | None:
        """The key that signs session cookies, from `session_key_file` (None: the view makes one at start)."""
        if self.session_key_file is None:
            return None
        try:
            value = self.session_key_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"[ui] session_key_file: cannot read {self.session_key_file}: {exc.strerror}") from exc
        if len(value) < MIN_TOKEN_CHARS:
            raise ConfigError(f"[ui] session_key_file: {self.session_key_file} holds {len(value)} characters; use a "
                              f"random key of at least {MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 32`)")
        return value


MIN_TOKEN_CHARS = 32
DEFAULT_CACHE_MAX_BYTES = 10 * 2**30


@dataclass(frozen=True)
class QueryConfig:
    """`[query]`: the local cache of archive objects that `auditlock query` and `auditlock ui` read through."""

    cache_dir: Path | None = None  # None: $XDG_CACHE_HOME/auditlock, else ~/.cache/auditlock
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES  # least recently used entries are evicted beyond this


ErasureStore = Literal["sql", "file"]


@dataclass(frozen=True)
class ErasureConfig:
    """`[erasure]`: the key store of erasable fields' data keys (docs/privacy.md)."""

    store: ErasureStore | None = None
    dsn_env: str | None = None  # store = "sql": the SQLAlchemy URL, from this environment variable ...
    dsn_file: Path | None = None  # ... or from this file
    dir: Path | None = None  # store = "file": one file per subject under this directory
    cache_ttl_s: float = 300.0  # how long a replica uses a cached key before asking the store again

    @property
    def configured(self) -> bool:
        """Whether a store is configured at all."""
        return self.store is not None

    def load_dsn(self) -> str:
        """The SQL store's URL from `dsn_env` or `dsn_file`; a `ConfigError` names the source that failed."""
        return _load_dsn("erasure", self.dsn_env, self.dsn_file,
                         set_env_to="the key store's SQLAlchemy URL (postgresql+psycopg://...)",
                         write_file="write the SQLAlchemy URL into it",
                         neither='[erasure] store = "sql" needs dsn_env or dsn_file')


@dataclass(frozen=True)
class CaptureConfig:
    """`[capture]`: `auditlock capture`, PostgreSQL row changes read from a logical replication slot.

    The connection string comes from an environment variable or a file, never from the TOML itself.
    """

    dsn_env: str | None = None
    dsn_file: Path | None = None
    slot: str = "auditlock"
    publication: str = "auditlock"
    state_dir: Path | None = None  # None: <spool dir>/.capture (must be on the spool's file system)
    http_host: str = "127.0.0.1"
    http_port: int = 9465
    grace_period_s: float = 25.0
    poll_interval_s: float = 1.0
    batch_changes: int = 10000
    app_roles: tuple[str, ...] = ()  # the roles granted auditlock_capture.bind_actor (the application's)
    attribution: str = "restricted"  # "open": start although any writing role can forge attribution messages

    @property
    def configured(self) -> bool:
        """Whether a connection string source is configured at all."""
        return self.dsn_env is not None or self.dsn_file is not None

    def load_dsn(self) -> str:
        """The libpq connection string; a `ConfigError` names the source that is missing or empty."""
        return _load_dsn("capture", self.dsn_env, self.dsn_file,
                         set_env_to=("a libpq connection string (e.g. \"host=db user=auditlock_capture dbname=app\"; "
                                     "the password from PGPASSFILE or PGPASSWORD)"),
                         write_file="write the connection string in it",
                         neither="[capture]: no connection configured; set dsn_env or dsn_file")


@dataclass(frozen=True)
class Config:
    """The whole `auditlock.toml`, validated."""

    service: str
    spool: SpoolConfig
    retention: RetentionConfig
    events: EventsConfig = field(default_factory=EventsConfig)
    targets: Mapping[str, TargetConfig] = field(default_factory=lambda: MappingProxyType({}))
    hmac: HmacConfig = field(default_factory=HmacConfig)
    sink: SinkConfig = field(default_factory=SinkConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    ui: UiConfig = field(default_factory=UiConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    erasure: ErasureConfig = field(default_factory=ErasureConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    source: str | None = None

    @property
    def erasable(self) -> bool:
        """Whether any target has erasable fields (the handler then loads `auditlock.privacy`)."""
        return any(target.erasable for target in self.targets.values())


def _load_dsn(section: str, env: str | None, file: Path | None, *, set_env_to: str, write_file: str,
              neither: str) -> str:
    """A connection string from `[section] dsn_env` or `dsn_file`; a `ConfigError` names the source that failed."""
    if env is not None:
        value = os.environ.get(env, "").strip()
        if not value:
            raise ConfigError(f"[{section}] dsn_env: environment variable {env} is not set or empty; "
                              f"set it to {set_env_to}")
        return value
    if file is None:
        raise ConfigError(neither)
    source = f"[{section}] dsn_file"
    try:
        value = _read_secret_file(file, source, write_file).decode().strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: {file} is not UTF-8 text; {write_file}") from None
    if not value:  # only Unicode whitespace
        raise ConfigError(f"{source}: {file} is empty; {write_file}")
    return value
