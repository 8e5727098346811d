"""Erasure test environments: configs with erasable fields over a file or a PostgreSQL key store, and a child
process (`python -m tests.support.privacy_env ...`) that seals events or reveals them with the same store."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditlock.config import Config, build_config, load_config
from tests.conftest import config_dict

REPO = Path(__file__).resolve().parents[2]
DSN_ENV = "AUDITLOCK_TEST_KEYSTORE_DSN"
MARKER = "zq-marker-7f3a-personal"  # scanned for in every byte of spools and archives

ERASABLE_TARGETS: dict[str, Any] = {
    "Customer": {"fields": ["name", "email", "tier"], "erasable": ["name", "email"]},
    "Order": {"fields": ["status", "shipping_address", "customer_id"], "erasable": ["shipping_address"],
              "subject": "Customer:customer_id"},
    "User": {}, "ApiKey": {},
}


@dataclass
class KeyStoreKind:
    """One key store under test: its `[erasure]` section and how to make it unreachable."""

    name: str
    section: dict[str, Any]
    take_down: Callable[[], None]


@pytest.fixture(params=["file", "sql"])
def key_store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KeyStoreKind:
    """Each key store in turn: a directory, then a fresh PostgreSQL database (its URL in DSN_ENV)."""
    if request.param == "file":
        root = tmp_path / "keys"

        def unplug_directory() -> None:  # the store's path now names a regular file: every open fails
            if root.exists():
                root.rename(tmp_path / "keys-away")
            root.write_bytes(b"")

        return KeyStoreKind("file", {"store": "file", "dir": str(root)}, unplug_directory)
    url = request.getfixturevalue("postgres_url")
    monkeypatch.setenv(DSN_ENV, url)

    def drop_database() -> None:  # connections are closed and the database is gone: the store is unreachable
        import psycopg
        from sqlalchemy import make_url

        parsed = make_url(url)
        admin = f"host={parsed.host} port={parsed.port} user=postgres dbname=postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{parsed.database}" WITH (FORCE)')

    return KeyStoreKind("sql", {"store": "sql", "dsn_env": DSN_ENV}, drop_database)


def erasable_doc(spool_path: Path, store: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """The test config document with erasable Customer/Order targets and `[erasure]` = `store`."""
    return config_dict(spool_path, targets=ERASABLE_TARGETS, erasure=store,
                       events={"include": ["order.*", "customer.*", "privacy.*"]}, **overrides)


def erasable_config(spool_path: Path, store: dict[str, Any], **overrides: Any) -> Config:
    """`erasable_doc` validated."""
    return build_config(erasable_doc(spool_path, store, **overrides))


def write_toml(path: Path, doc: dict[str, Any]) -> Path:
    """Write a config document as TOML (flat sections and sub-tables of scalars and string lists)."""
    lines: list[str] = []
    scalars = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    lines += [f"{k} = {_toml(v)}" for k, v in scalars.items()]
    for name, table in doc.items():
        if isinstance(table, dict):
            _table(lines, name, table)
    path.write_text("\n".join(lines) + "\n")
    return path


def _table(lines: list[str], name: str, table: dict[str, Any]) -> None:
    lines.append(f"[{name}]")
    lines += [f"{_key(k)} = {_toml(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for key, sub in table.items():
        if isinstance(sub, dict):
            _table(lines, f"{name}.{_key(key)}", sub)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else orjson.dumps(key).decode()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return orjson.dumps(value).decode()


def child_env() -> dict[str, str]:
    """The environment of a child process: this one's, with the repository importable."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def run_child(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `python -m tests.support.privacy_env ARGS` to completion."""
    return subprocess.run([sys.executable, "-m", "tests.support.privacy_env", *args], env=child_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def _seal(config_path: str, customer_id: str, value: str) -> None:
    """Emit one customer.updated event for Customer:<id> with `value` as its erasable email."""
    from auditlock.handler.core import AuditCore

    core = AuditCore(load_config(config_path))
    core.emit("customer.updated", {"actor_id": "user:1", "target_type": "Customer", "target_id": customer_id,
                                   "after": {"email": value}})
    core.writer.close()


def _reveal(config_path: str, spool: str) -> None:
    """Print `{target_id: revealed email}` for every customer event in a spool."""
    from auditlock.privacy.erasable import revealer_for
    from tests.support.spool_files import spool_events

    revealer = revealer_for(load_config(config_path))
    assert revealer is not None
    shown = {e["target_id"]: revealer.payload(e["payload"])["changes"]["email"][1]
             for e in spool_events(Path(spool)) if e["event_type"] == "customer.updated"}
    print(orjson.dumps(shown).decode())


def _race(config_path: str, go_file: str, count: str) -> None:
    """Wait for `go_file`, then ask for the keys of Racer:0..count-1 at once; print {subject: key id}."""
    from auditlock.privacy.keystore import open_store
    from tests.support.waiting import wait_for

    store = open_store(load_config(config_path).erasure)
    wait_for(lambda: Path(go_file).exists(), what="the go file")
    print(orjson.dumps({f"Racer:{n}": store.key_for(f"Racer:{n}").key_id for n in range(int(count))}).decode())


def main(argv: list[str]) -> None:
    """The child's commands: seal CONFIG ID VALUE | reveal CONFIG SPOOL | race CONFIG GO_FILE COUNT."""
    commands: dict[str, Callable[..., None]] = {"seal": _seal, "reveal": _reveal, "race": _race}
    commands[argv[0]](*argv[1:])


def iter_bytes(root: Path) -> Iterator[tuple[Path, bytes]]:
    """Every regular file under `root` with its bytes."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path, path.read_bytes()


if __name__ == "__main__":
    main(sys.argv[1:])
