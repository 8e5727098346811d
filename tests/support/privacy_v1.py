"""The handler's sealer as it was before `enc:v2` (c6dddb5): one `enc:v1:` value per AES-GCM call. Archives hold
such values for years, so tests write them with this exact code path and check every reader still reveals them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from auditlock.config.model import TargetConfig
from auditlock.handler.core import AuditCore
from auditlock.privacy.crypto import DataKey
from auditlock.privacy.erasable import Sealer, subject_of

_NO_CHANGES: dict[str, list[Any]] = {}


class V1Sealer(Sealer):
    """`Sealer.seal` of c6dddb5, verbatim: every erasable value sealed alone as `enc:v1:`."""

    def seal(self, event_type: str, target: TargetConfig, target_type: str | None, target_id: str | None, *,
             fields: Mapping[str, Any], payload: dict[str, Any]) -> None:
        """Replace the erasable values of `payload` (built from `fields`) by their sealed form, in place."""
        changes: dict[str, list[Any]] = payload.get("changes") or _NO_CHANGES
        key: DataKey | None = None
        for name in target.erasable:
            value, pair = payload.get(name), changes.get(name)
            if value is None and pair is None:
                continue
            if key is None:
                keys = self._keys or self.keys
                if target.subject is None and target_id is not None:
                    key = keys.fresh(f"{target_type}:{target_id}")
                if key is None:
                    key = keys.key_for(subject_of(event_type, target, target_type, target_id, fields))
            if value is not None:
                payload[name] = key.seal(name, value)
            if pair is not None:
                changes[name] = [None if item is None else key.seal(name, item) for item in pair]


def v1_core(core: AuditCore) -> AuditCore:
    """`core`, its sealer replaced by the v1 one over the same config (and so the same key store)."""
    core._builder._sealer = V1Sealer(core.config)  # the old code path, for archives it wrote
    return core
