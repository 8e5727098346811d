"""The hmac keyring: every key hashed fields were ever written under, by id, and the current one.

Value format (docs/events.md, "hmac"):
- `hmac-sha256:<key id>:<64 hex>` — hashed under the keyring key `<key id>` (`[hmac.keys.<key id>]`);
- `hmac-sha256:<64 hex>` — hashed under the id-less legacy key (`[hmac] key_env`/`key_file`), the only form
  before key rotation existed, still written while no `[hmac.keys]` is configured.

New values are hashed under the current key only. A reader looking a value up (`auditlock hash`,
`query --hmac-field`, the Athena queries) computes its form under *every* key of the ring, so a value written
before a rotation is found as well as one written after. A key removed from the ring makes the values hashed
under it unsearchable (and no longer linkable to a value) — the ring must keep every key whose values are
still retained and must stay findable. Key bytes never appear in a message; ids and sources do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from auditlock.config.model import HmacConfig
from auditlock.handler.encode import HMAC_PREFIX, hmac_value

_HASHED = re.compile(r"hmac-sha256:(?:(?P<key_id>[A-Za-z0-9_-]{1,32}):)?[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class HmacKeyring:
    """Keys by id (None: the legacy key), and the id of the current one (the one new values are hashed under)."""

    current: str | None
    keys: Mapping[str | None, bytes]

    @classmethod
    def load(cls, config: HmacConfig) -> HmacKeyring:
        """Every configured key, read from its source; a `ConfigError` names a source that failed (not a key)."""
        return cls(config.current_id, config.load_keys())

    @classmethod
    def load_current(cls, config: HmacConfig) -> HmacKeyring:
        """A ring of the current key only: what an application process hashes new values with."""
        key_id, key = config.load_current()
        return cls(key_id, {key_id: key})

    @property
    def current_key(self) -> bytes:
        """The bytes of the current key."""
        return self.keys[self.current]

    def hash(self, encoded: Any) -> Any:
        """The form a new value is written in: hashed under the current key (None stays None)."""
        return hmac_value(self.current_key, encoded, self.current)

    def candidates(self, encoded: Any) -> tuple[str, ...]:
        """The value's form under every key, the current key's first: what a stored value may hold."""
        forms = [hmac_value(self.keys[self.current], encoded, self.current)]
        forms += [hmac_value(key, encoded, key_id) for key_id, key in self.keys.items() if key_id != self.current]
        return tuple(forms)


def key_id_of(value: str) -> str | None:
    """The id of the key a stored hashed value was written under (None for a legacy value); ValueError if `value`
    is not a hashed value at all."""
    match = _HASHED.match(value)
    if match is None:
        raise ValueError(f"not a {HMAC_PREFIX} value")
    return match["key_id"]
