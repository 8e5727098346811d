"""Reading `auditlock.toml`: locate, parse, apply `AUDITLOCK_<SECTION>_<KEY>` overrides, validate, build.

Validation collects every problem before raising one `ConfigError`, so a user fixes a file in one pass.
Relative paths in the file are relative to the file's directory; in environment overrides, to the working
directory.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from auditlock.config import schema
from auditlock.config.capture import capture_target_problems, check_captured_tables, read_capture, target_columns
from auditlock.config.erasure import check_erasable, read_erasure
from auditlock.config.model import (
    AgentConfig,
    Config,
    EventsConfig,
    HmacConfig,
    HmacKeySource,
    QueryConfig,
    RetentionClass,
    RetentionConfig,
    SinkConfig,
    SpoolConfig,
    TargetConfig,
    UiConfig,
)
from auditlock.config.schema import Key
from auditlock.config.tables import TableReader, did_you_mean
from auditlock.errors import ConfigError

ENV_PREFIX = "AUDITLOCK_"
ENV_CONFIG = "AUDITLOCK_CONFIG"
DEFAULT_FILE = "auditlock.toml"
_UI_USER = re.compile(r"^[A-Za-z0-9_.@-]+\Z")


def load_config(path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate a config file (argument, else `$AUDITLOCK_CONFIG`, else `./auditlock.toml`)."""
    env = os.environ if environ is None else environ
    file = _locate(path, env)
    raw = _read_toml(file)
    return build_config(raw, base_dir=file.parent, environ=env, source=str(file))


def build_config(
    raw: Mapping[str, Any],
    *,
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    source: str | None = None,
) -> Config:
    """Validate a parsed TOML document (plus environment overrides) into a `Config`."""
    reader = _Reader(base_dir or Path.cwd(), source)
    merged = _apply_env_overrides(raw, environ or {}, reader.problems)
    config = reader.config(merged)
    if reader.problems or config is None:
        raise ConfigError(reader.problems, source=source)
    return config


def _locate(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    if path is not None:
        return Path(path)
    if environ.get(ENV_CONFIG):
        return Path(environ[ENV_CONFIG])
    if Path(DEFAULT_FILE).exists():
        return Path(DEFAULT_FILE)
    raise ConfigError(
        f"no configuration: pass a path, set {ENV_CONFIG}, or create ./{DEFAULT_FILE}"
    )


def _read_toml(file: Path) -> dict[str, Any]:
    import tomllib  # noqa: PLC0415 - only configs read from files pay for the parser

    try:
        with file.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {file} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from exc


# --- environment overrides ------------------------------------------------------------------------------


def _apply_env_overrides(raw: Mapping[str, Any], environ: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    secrets = _secret_variables(raw)
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG or name in secrets:
            continue
        target = _env_target(name, problems)
        if target is None:
            continue
        section, key, spec = target
        value = _parse_env_value(name, environ[name], spec, problems)
        if value is None:
            continue
        if section is None:
            merged[key] = value
        else:
            table = merged.setdefault(section, {})
            if isinstance(table, dict):
                table[key] = value
    return merged


def _secret_variables(raw: Mapping[str, Any]) -> set[str]:
    """The variables the file names as secret sources (`key_env`, `dsn_env`, `token_env`, … at any depth): they hold
    a secret, not an override, even when named like one (`dsn_env = "AUDITLOCK_CAPTURE_DSN"`)."""
    found: set[str] = set()
    for key, value in raw.items():
        if isinstance(value, Mapping):
            found |= _secret_variables(value)
        elif isinstance(key, str) and key.endswith("_env") and isinstance(value, str):
            found.add(value)
    return found


def _env_target(name: str, problems: list[str]) -> tuple[str | None, str, Key] | None:
    rest = name[len(ENV_PREFIX):].lower()
    if rest in schema.TOP_LEVEL:
        return None, rest, schema.TOP_LEVEL[rest]
    section, _, key = rest.partition("_")
    if section not in schema.SECTIONS:
        return None  # not an override (e.g. AUDITLOCK_REQUIRE_RGW); only known sections are reserved
    keys = schema.SECTIONS[section]
    if key not in keys:
        names = [f"{ENV_PREFIX}{section.upper()}_{k.upper()}" for k in keys]
        problems.append(f"environment variable {name} names no key of [{section}]" + did_you_mean(name, names))
        return None
    return section, key, keys[key]


def _parse_env_value(name: str, text: str, spec: Key, problems: list[str]) -> Any:
    try:
        return _ENV_PARSERS[spec.kind](text)
    except ValueError:
        problems.append(f"environment variable {name}={text!r} is not {spec.describe()}")
        return None


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


_ENV_PARSERS: dict[str, Any] = {
    "int": int,
    "float": float,
    "bool": _parse_bool,
    "list": lambda text: [part.strip() for part in text.split(",") if part.strip()],
    "path": lambda text: str(Path(text).absolute()),
    "str": str,
}


# --- the validating reader ------------------------------------------------------------------------------


class _Reader(TableReader):
    """Reads the sections of a raw document, collecting every problem instead of stopping at the first."""

    def config(self, raw: Mapping[str, Any]) -> Config | None:
        known = [*schema.TOP_LEVEL, *schema.SECTIONS, *schema.NESTED_SECTIONS]
        self._unknown_keys(raw, known, "the top level")
        service = self._value(raw, "service", schema.STR, "service", required=True)
        before_sizes = len(self.problems)
        spool = self._spool(self._table(raw, "spool"))
        events = self._events(self._table(raw, "events"))
        targets = self._targets(self._table(raw, "targets"))
        hmac = self._hmac(self._table(raw, "hmac"))
        retention = self._retention(self._table(raw, "retention"))
        sink = SinkConfig(**self._scalars(self._table(raw, "sink"), "sink"))
        sizes_valid = not any(p.startswith(("spool.segment_max_bytes", "sink.batch_max_bytes"))
                              for p in self.problems[before_sizes:])
        agent = self._agent(self._table(raw, "agent"))
        ui = self._ui(self._table(raw, "ui"))
        query = QueryConfig(**self._scalars(self._table(raw, "query"), "query"))
        erasure = read_erasure(self, self._table(raw, "erasure"))
        capture = read_capture(self, self._table(raw, "capture"))
        check_captured_tables(self, targets)
        self._cross_check(targets, hmac, retention)
        check_erasable(targets, erasure, self.problems)
        if spool is not None and sizes_valid and spool.segment_max_bytes > sink.batch_max_bytes:
            self.problems.append(
                f"[spool] segment_max_bytes = {spool.segment_max_bytes} is more than [sink] batch_max_bytes = "
                f"{sink.batch_max_bytes}; an object holds whole segments, so lower the first or raise the second"
            )
        if self.problems or service is None or spool is None or retention is None:
            return None
        return Config(service=service, spool=spool, events=events, targets=targets, hmac=hmac,
                      retention=retention, sink=sink, agent=agent, ui=ui, query=query, erasure=erasure, capture=capture,
                      source=self.source)

    # sections

    def _spool(self, table: Mapping[str, Any]) -> SpoolConfig | None:
        values = self._scalars(table, "spool")
        if "dir" not in values:
            self.problems.append("[spool] dir is required: the directory the application writes events to")
            return None
        return SpoolConfig(**values)

    def _events(self, table: Mapping[str, Any]) -> EventsConfig:
        values = self._scalars(table, "events")
        if not values.get("include"):
            self.problems.append(
                '[events] include is required: glob patterns of audit event types, e.g. ["order.*", "auth.*"]'
            )
        values["include"] = tuple(values.get("include", ()))
        return EventsConfig(**values)

    def _hmac(self, table: Mapping[str, Any]) -> HmacConfig:
        scalars = {k: v for k, v in table.items() if k not in schema.SUB_TABLES["hmac"]}
        values = self._scalars(scalars, "hmac")
        if "key_env" in values and "key_file" in values:
            self.problems.append("[hmac]: set either key_env or key_file, not both")
        keys = self._hmac_keys(self._table(table, "keys", "hmac.keys"))
        current = values.get("current")
        if keys and current is None:
            self.problems.append(f"[hmac] current is required with [hmac.keys]: the id of the key new values are "
                                 f"hashed under, e.g. current = \"{sorted(keys)[-1]}\"")
        elif current is not None and current not in keys:
            self.problems.append(f"[hmac] current = \"{current}\" names no key in [hmac.keys]; add "
                                 f"[hmac.keys.{current}] with key_env or key_file" + did_you_mean(current, set(keys)))
        return HmacConfig(**values, keys=MappingProxyType(keys))

    def _hmac_keys(self, table: Mapping[str, Any]) -> dict[str, HmacKeySource]:
        keys = {}
        for key_id, sub in table.items():
            where = f"hmac.keys.{key_id}"
            if not schema.HMAC_KEY_ID.fullmatch(key_id):
                self.problems.append(f"[hmac.keys] {key_id!r} is not a valid key id ({schema.HMAC_KEY_ID_RULE}): "
                                     "it becomes part of every value hashed under it; rename the key")
                continue
            if not isinstance(sub, dict):
                self.problems.append(f"[{where}] must be a table with key_env or key_file")
                continue
            values = self._keys(sub, schema.HMAC_KEY_KEYS, where)
            if ("key_env" in values) == ("key_file" in values):
                self.problems.append(f"[{where}] needs exactly one of key_env or key_file")
                continue
            keys[key_id] = HmacKeySource(**values)
        return keys

    def _agent(self, table: Mapping[str, Any]) -> AgentConfig:
        return AgentConfig(**self._scalars(table, "agent"))

    def _ui(self, table: Mapping[str, Any]) -> UiConfig:
        scalars = {k: v for k, v in table.items() if k not in schema.SUB_TABLES["ui"]}
        values = self._scalars(scalars, "ui")
        values["users"] = MappingProxyType(self._ui_users(self._table(table, "users", "ui.users")))
        values["trusted_proxies"] = tuple(values.get("trusted_proxies", ()))
        ui = UiConfig(**values)
        self._check_ui(ui)
        return ui

    def _ui_users(self, table: Mapping[str, Any]) -> dict[str, str]:
        users = {}
        for name, hashed in table.items():
            if not _UI_USER.match(name):
                self.problems.append(f"[ui.users] {name!r}: a user name is letters, digits and _ . @ - only")
            elif not isinstance(hashed, str) or not hashed.startswith("$argon2"):
                self.problems.append(f"[ui.users] {name} must be an argon2 hash (\"$argon2id$...\"); make one "
                                     "with `auditlock ui --hash-password`, never write the password itself")
            else:
                users[name] = hashed
        return users

    def _check_ui(self, ui: UiConfig) -> None:
        if ui.auth == "password" and not ui.users:
            self.problems.append('[ui] auth = "password" needs [ui.users] with at least one user, e.g. '
                                 'alice = "$argon2id$..." (from `auditlock ui --hash-password`)')
        if ui.auth == "token" and (ui.token_env is None) == (ui.token_file is None):
            self.problems.append('[ui] auth = "token" needs exactly one of token_env or token_file')
        if ui.auth == "header" and (ui.trusted_header is None or not ui.trusted_proxies):
            self.problems.append('[ui] auth = "header" needs trusted_header (e.g. "X-Forwarded-User") and '
                                 'trusted_proxies (the reverse proxy\'s addresses, e.g. ["127.0.0.1"])')
        for proxy in ui.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                self.problems.append(f"[ui] trusted_proxies: {proxy!r} is not an IP address or network "
                                     "(e.g. 10.0.0.0/8)")
        if ui.root_path and (not ui.root_path.startswith("/") or ui.root_path.endswith("/")):
            self.problems.append(f"[ui] root_path = {ui.root_path!r}: a path prefix starts with '/' and does not "
                                 "end with one, e.g. \"/audit\"")
        if (ui.tls_cert_file is None) != (ui.tls_key_file is None):
            self.problems.append("[ui] tls_cert_file and tls_key_file go together: set both or neither")

    def _targets(self, table: Mapping[str, Any]) -> Mapping[str, TargetConfig]:
        targets = {}
        for name, sub in table.items():
            where = f"targets.{name}"
            if not isinstance(sub, dict):
                self.problems.append(f"[{where}] must be a table with fields/hmac/retention/sensitive_reads")
                continue
            scalars = {k: v for k, v in sub.items() if k not in schema.TARGET_SUB_TABLES}
            values = self._keys(scalars, schema.TARGET_KEYS, where)
            self.problems.extend(capture_target_problems(name, sub))
            values["columns"] = MappingProxyType(target_columns(sub))
            values["fields"] = frozenset(values.get("fields", ()))
            values["hmac"] = frozenset(values.get("hmac", ()))
            values["erasable"] = frozenset(values.get("erasable", ()))
            self._reserved_field_names(where, values)
            targets[name] = TargetConfig(**values)
        return MappingProxyType(targets)

    def _reserved_field_names(self, where: str, values: Mapping[str, Any]) -> None:
        """A target field may not be named like auditlock's own payload key `changes` ({field: [before, after]}):
        its value would stand where every reader expects the changes, or be overwritten by them."""
        reserved = schema.RESERVED_PAYLOAD_KEY
        for key in ("fields", "hmac", "erasable"):
            if reserved in values[key]:
                self.problems.append(f'[{where}] {key} names "{reserved}", auditlock\'s own payload key (before/after '
                                     "of changed fields); rename the application's field, e.g. \"change_note\"")

    def _retention(self, table: Mapping[str, Any]) -> RetentionConfig | None:
        self._unknown_keys(table, ["default", "classes", "events"], "[retention]")
        default = self._value(table, "default", schema.STR, "retention.default", required=True)
        classes = self._retention_classes(self._table(table, "classes", "retention.classes"))
        events = self._retention_events(self._table(table, "events", "retention.events"))
        if not classes:
            self.problems.append(
                "[retention.classes] must define at least one class, e.g. [retention.classes.standard] days = 400"
            )
        if default is None or not classes:
            return None
        return RetentionConfig(default=default, classes=MappingProxyType(classes), events=events)

    def _retention_classes(self, table: Mapping[str, Any]) -> dict[str, RetentionClass]:
        classes = {}
        for name, sub in table.items():
            where = f"retention.classes.{name}"
            if problem := schema.retention_class_name_problem(name):
                self.problems.append(f"[retention.classes]: {problem}; rename the class")
                continue
            if not isinstance(sub, dict):
                self.problems.append(f"[{where}] must be a table with days/mode/hot_days")
                continue
            values = self._keys(sub, schema.RETENTION_CLASS_KEYS, where)
            if "days" not in values:
                self.problems.append(f"[{where}] days is required: how many days objects stay locked")
                continue
            hot = values.get("hot_days")
            if hot is not None and hot > values["days"]:
                self.problems.append(f"[{where}] hot_days = {hot} is more than days = {values['days']}")
            classes[name] = RetentionClass(**values)
        return classes

    def _retention_events(self, table: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        rules = []
        for pattern, name in table.items():
            if isinstance(name, str):
                rules.append((pattern, name))
            else:
                self.problems.append(f'[retention.events] "{pattern}" = {name!r}: must be a class name string')
        return tuple(rules)

    def _cross_check(self, targets: Mapping[str, TargetConfig], hmac: HmacConfig,
                     retention: RetentionConfig | None) -> None:
        if retention is not None:
            self._check_class_refs(targets, retention)
        hashed = sorted(f"targets.{name}" for name, target in targets.items() if target.hmac)
        if hashed and not hmac.configured:
            self.problems.append(
                f"[{hashed[0]}] hmac fields need a key: add [hmac] key_env = \"VAR\" or key_file = \"PATH\""
            )

    def _check_class_refs(self, targets: Mapping[str, TargetConfig], retention: RetentionConfig) -> None:
        defined = set(retention.classes)
        refs = [("retention.default", retention.default)]
        refs += [(f"targets.{n}.retention", t.retention) for n, t in targets.items() if t.retention]
        refs += [(f'retention.events."{p}"', c) for p, c in retention.events]
        for where, name in refs:
            if problem := schema.retention_class_name_problem(name):
                self.problems.append(f"{where}: {problem}")
            elif name not in defined:
                self.problems.append(
                    f"{where} = \"{name}\" names no class in [retention.classes]" + did_you_mean(name, defined)
                )
