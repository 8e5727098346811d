"""The table of every configuration key: its type, default bounds and allowed values.

One table drives validation of the file, of environment overrides, and the "did you mean" hints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    """One configuration key: the kind of value it holds and what is allowed."""

    kind: str  # "str" | "int" | "float" | "bool" | "path" | "list"
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    def describe(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.choices:
            return "one of " + ", ".join(f'"{c}"' for c in self.choices)
        words = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
                 "path": "a path string", "list": "a list of strings"}[self.kind]
        if self.minimum is not None and self.maximum is not None:
            return f"{words} from {self.minimum:g} to {self.maximum:g}"
        if self.minimum is not None:
            return f"{words} >= {self.minimum:g}"
        return words


STR = Key("str")
PATH = Key("path")
BOOL = Key("bool")
LIST = Key("list")


def positive_int(minimum: int = 1) -> Key:
    """An integer key with a lower bound."""
    return Key("int", minimum=minimum)


def positive_float(minimum: float = 0.001) -> Key:
    """A number key with a lower bound."""
    return Key("float", minimum=minimum)


TOP_LEVEL: dict[str, Key] = {"service": STR}

SECTIONS: dict[str, dict[str, Key]] = {
    "spool": {
        "dir": PATH,
        "durability": Key("str", choices=("sync", "group", "process")),
        "flush_interval_ms": positive_int(1),
        "segment_max_bytes": positive_int(4096),
        "segment_max_age_s": positive_float(),
        "max_bytes": positive_int(65536),
        "on_error": Key("str", choices=("raise", "drop")),
        "warn_fraction": Key("float", minimum=0.01, maximum=1.0),
        "commit_delay_us": Key("int", minimum=0, maximum=10_000),
    },
    "events": {"include": LIST, "keep_in_app_log": BOOL, "max_event_bytes": positive_int(1024)},
    "hmac": {"key_env": STR, "key_file": PATH, "current": STR},
    "sink": {
        "bucket": STR,
        "prefix": STR,
        "region": STR,
        "endpoint_url": STR,
        "batch_max_bytes": positive_int(1024),
        "batch_max_age_s": positive_float(),
        "kms_key_id": STR,
        "read_timeout_s": positive_float(),
    },
    "agent": {
        "http_host": STR,
        "http_port": Key("int", minimum=0, maximum=65535),
        "grace_period_s": positive_float(),
        "rescan_interval_s": positive_float(),
        "state_dir": PATH,
        "backoff_initial_s": positive_float(),
        "backoff_max_s": positive_float(),
        "signing_key_file": PATH,
    },
    "ui": {
        "host": STR,
        "port": Key("int", minimum=0, maximum=65535),
        "auth": Key("str", choices=("password", "token", "header")),
        "token_env": STR,
        "token_file": PATH,
        "token_actor": STR,
        "trusted_header": STR,
        "trusted_proxies": LIST,
        "session_max_age_s": positive_int(60),
        "session_key_file": PATH,
        "revoked_sessions_dir": PATH,
        "page_size": Key("int", minimum=5, maximum=1000),
        "cache_dir": PATH,
        "tls_cert_file": PATH,
        "tls_key_file": PATH,
        "allow_insecure_http": BOOL,
        "secure_cookies": BOOL,
        "root_path": STR,
    },
    "query": {"cache_dir": PATH, "cache_max_bytes": positive_int(0)},
    "erasure": {
        "store": Key("str", choices=("sql", "file")),
        "dsn_env": STR,
        "dsn_file": PATH,
        "dir": PATH,
        "cache_ttl_s": positive_float(),
    },
    "capture": {
        "dsn_env": STR,
        "dsn_file": PATH,
        "slot": STR,
        "publication": STR,
        "state_dir": PATH,
        "http_host": STR,
        "http_port": Key("int", minimum=0, maximum=65535),
        "grace_period_s": positive_float(),
        "poll_interval_s": positive_float(),
        "batch_changes": positive_int(1),
        "app_roles": LIST,
        "attribution": Key("str", choices=("restricted", "open")),
    },
}

# Sub-tables of a scalar section: `[ui.users]` maps user names to argon2 password hashes.
# `[hmac.keys.<id>]` are the keyring's keys (handler/hmac_keys.py).
SUB_TABLES: dict[str, tuple[str, ...]] = {"ui": ("users",), "hmac": ("keys",)}

HMAC_KEY_KEYS: dict[str, Key] = {"key_env": STR, "key_file": PATH}
# An hmac key id becomes part of every value hashed under it (`hmac-sha256:<id>:<hex>`): no ':' (the separator),
# no ',' (the Athena queries take a comma-separated list of hashed forms), nothing a terminal would interpret.
HMAC_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
HMAC_KEY_ID_RULE = "1 to 32 letters, digits, '_' and '-'"

RESERVED_PAYLOAD_KEY = "changes"  # auditlock's own payload key, {field: [before, after]}: never a target field
TARGET_KEYS: dict[str, Key] = {"fields": LIST, "hmac": LIST, "retention": STR, "sensitive_reads": BOOL,
                               "erasable": LIST, "subject": STR, "table": STR}
# Sub-tables of a target: `[targets.<Type>.columns]` maps a captured table's column names to field names.
TARGET_SUB_TABLES = ("columns",)
RETENTION_KEYS: dict[str, Key] = {"default": STR}
RETENTION_CLASS_KEYS: dict[str, Key] = {
    "days": positive_int(1),
    "mode": Key("str", choices=("COMPLIANCE", "GOVERNANCE")),
    "hot_days": positive_int(0),
}

# A retention class name becomes part of object keys, the `auditlock-retention` tag value and lifecycle rule IDs
# (archive/layout.py, bucket/): only characters every one of them holds as they are, no path separator, no glob.
RETENTION_CLASS_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
RETENTION_CLASS_NAME_RULE = "1 to 63 lowercase letters, digits, '_' and '-', starting with a letter or digit"


def retention_class_name_problem(name: str) -> str | None:
    """Why `name` cannot be a retention class name, or None if it can."""
    if RETENTION_CLASS_NAME.fullmatch(name):
        return None
    return (f"{name!r} is not a valid retention class name ({RETENTION_CLASS_NAME_RULE}, e.g. \"standard\" or "
            "\"pci-dss\"): it becomes part of object keys, tags and lifecycle rule IDs")


# Sections that are tables of named sub-tables, not of scalar keys.
NESTED_SECTIONS = ("targets", "retention")
