"""Erasable values in records: sealed by the handler (`Sealer`), revealed by the readers (`Revealer`).

Which values: the target's `erasable` fields, in `payload` and on either side of `payload.changes`; `None` stays
null. Whose: the target itself (`"<target type>:<target id>"`) unless `subject = "<Type>:<field>"` names a field
holding the subject's id — read from the call's fields, its `payload=`, then `after=`, then `before=` (the field
need not be allowlisted: it picks the key and is written only if `fields` lists it). An event carrying an
erasable value but no subject is refused (`EventError`): a value sealed under a guessed subject could never be
erased with the right one.

Readers show an erased subject's values as `crypto.ERASED`; a value that cannot be revealed for any other reason
(altered, a key this store never had, malformed) as `crypto.UNREADABLE`, with a finding naming the event, the
field and the cause — never a crash. A key store that cannot be reached stops the reader with `KeyStoreError`
rather than show every value as erased.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import orjson

from auditlock.config.model import Config, TargetConfig
from auditlock.errors import ConfigError, EventError, KeyStoreError
from auditlock.privacy.crypto import (
    ERASED,
    SEALED_MARK,
    SUBJECT,
    UNREADABLE,
    DataKey,
    DecryptError,
    Places,
    is_sealed,
    is_sealed_v2,
    parse_sealed,
    parse_sealed_v2,
)
from auditlock.privacy.keystore import KeyCache, KeyStore, open_store

MAX_FINDINGS = 100
_NO_CHANGES: dict[str, list[Any]] = {}  # never written to: a field is sealed in `changes` only if it is there
_SUBJECT_ID_TYPES = (str, int)
_SHAPES_CACHED = 256  # per target type: the places of the shapes (which values an event holds) seen most


class Sealer:
    """Seals a record's erasable values under its subject's data key (cached, see `keystore.KeyCache`).

    The store is opened at the first erasable value, not before: a core that never seals (the agent's trail,
    the view's access log) needs no key store, and its URL, at all. A store that cannot even be opened (its URL
    missing) is then a `KeyStoreError` like an unreachable one: the event is refused.
    """

    def __init__(self, config: Config, store: KeyStore | None = None) -> None:
        self._config = config.erasure
        self._keys = None if store is None else KeyCache(store, config.erasure.cache_ttl_s)
        self._lock = threading.Lock()
        self._plans: dict[str | None, _SealPlan] = {}  # per target type (configured ones only: the builder checks)

    @property
    def keys(self) -> KeyCache:
        """The key cache over the store (opened on first use)."""
        if self._keys is None:
            with self._lock:
                if self._keys is None:
                    try:
                        store = open_store(self._config)
                    except ConfigError as exc:
                        raise KeyStoreError(f"the key store cannot be opened: {exc}") from exc
                    self._keys = KeyCache(store, self._config.cache_ttl_s)
        return self._keys

    def seal(self, event_type: str, target: TargetConfig, target_type: str | None, target_id: str | None, *,
             fields: Mapping[str, Any], payload: dict[str, Any]) -> None:
        """Replace the erasable values of `payload` (built from `fields`) by their sealed form, in place: one v2
        envelope for all of them (see `crypto`'s design comment)."""
        plan = self._plans.get(target_type) or self._plan_of(target_type, target)
        changes: dict[str, list[Any]] = payload.get("changes") or _NO_CHANGES
        values: Sequence[Any] | None = None
        if changes is _NO_CHANGES:  # the common case, every erasable field in the payload and no change: no shape
            try:
                values = plan.every_value(payload)
            except KeyError:  # a field missing
                values = None
        if values is None or None in values:
            sealed = plan.sealed_of(payload, changes)
            if sealed is None:
                return
            places, values = sealed
        else:
            places = plan.flat
        # The common case without a call to the store: the target is the subject and its key is cached (a subject
        # is checked once, before its key is first asked for).
        keys = self._keys or self.keys  # the property (which opens the store) only until it is open
        key = keys.fresh(f"{target_type}:{target_id}") if plan.target_is_subject and target_id is not None else None
        if key is None:
            key = keys.key_for(subject_of(event_type, target, target_type, target_id, fields))
        envelope = key.seal_event(places, values)
        if places is plan.flat:
            payload[plan.first] = envelope
            for name in plan.rest:
                payload[name] = key.reference
        else:
            _place(payload, changes, places, envelope, key.reference)

    def _plan_of(self, target_type: str | None, target: TargetConfig) -> _SealPlan:
        plan = self._plans[target_type] = _SealPlan(target)
        return plan


class _SealPlan:
    """What sealing needs of one target type, computed once: its erasable fields in place order (sorted), each
    with the bits its value, before and after side set in an event's shape; the places of each shape seen; and
    for the common shape (every field in the payload, no change) its places, ready, and a C-level getter of its
    values."""

    __slots__ = ("every_value", "fields", "first", "flat", "places", "rest", "target_is_subject")

    def __init__(self, target: TargetConfig) -> None:
        names = sorted(target.erasable)
        self.every_value = _values_getter(names)
        self.first, self.rest = names[0], tuple(names[1:])
        self.flat: Places = tuple((name, 0) for name in names)  # every field in the payload, no change
        self.fields = tuple((name, 1 << 3 * i, 2 << 3 * i, 4 << 3 * i) for i, name in enumerate(names))
        self.target_is_subject = target.subject is None
        self.places: dict[int, Places] = {}

    def sealed_of(self, payload: dict[str, Any], changes: dict[str, list[Any]]) -> tuple[Places, list[Any]] | None:
        """The places and values (in place order) of the non-null erasable values of an event; None if none."""
        shape = 0
        values: list[Any] = []
        for name, value_bit, before_bit, after_bit in self.fields:
            value, pair = payload.get(name), changes.get(name)
            if value is not None:
                shape |= value_bit
                values.append(value)
            if pair is not None:
                before, after = pair  # the builder's [before, after]
                if before is not None:
                    shape |= before_bit
                    values.append(before)
                if after is not None:
                    shape |= after_bit
                    values.append(after)
        if not shape:
            return None
        return self.places.get(shape) or self.places_of(shape), values

    def places_of(self, shape: int) -> Places:
        """The places (`crypto.Places`, in place order) of the values an event's shape says it holds."""
        places = tuple((name, where) for name, *bits in self.fields for where, bit in enumerate(bits) if shape & bit)
        if len(self.places) >= _SHAPES_CACHED:
            self.places.clear()
        self.places[shape] = places
        return places


def _values_getter(names: list[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """What reads the values of `names` from a payload (`KeyError` if one is missing), as a tuple."""
    if len(names) > 1:
        return itemgetter(*names)
    name = names[0]
    return lambda payload: (payload[name],)


def _place(payload: dict[str, Any], changes: dict[str, list[Any]], places: Places, envelope: str,
           reference: str) -> None:
    """Write the envelope at the first place and the reference at every other one."""
    sealed = envelope
    for name, where in places:
        if where == 0:
            payload[name] = sealed
        else:
            changes[name][where - 1] = sealed
        sealed = reference


def subject_of(event_type: str, target: TargetConfig, target_type: str | None, target_id: str | None,
               fields: Mapping[str, Any]) -> str:
    """The subject id whose key seals this event's erasable values; `EventError` if the event names none."""
    named = target.subject_field
    if named is None:
        if target_id is None:
            raise EventError(f"event {event_type!r} on {target_type} carries erasable values but no target_id: "
                             "pass target_id= (the target is the data subject whose key encrypts them)")
        subject = f"{target_type}:{target_id}"
    else:
        kind, name = named
        value = _subject_value(fields, name)
        if isinstance(value, bool) or not isinstance(value, _SUBJECT_ID_TYPES):
            raise EventError(f"event {event_type!r} on {target_type} carries erasable values but {name}= "
                             f"(subject = \"{target.subject}\") is {'missing' if value is None else repr(value)}: "
                             f"pass {name}= as the {kind}'s id (a str or int), in the call or in payload=/after=")
        subject = f"{kind}:{value}"
    if not SUBJECT.match(subject):
        raise EventError(f"event {event_type!r}: subject {subject[:80]!r} is not a printable id of at most 256 "
                         "characters; pass the subject's id, not a description")
    return subject


def _subject_value(fields: Mapping[str, Any], name: str) -> Any:
    if name in fields:
        return fields[name]
    for source in ("payload", "after", "before"):
        part = fields.get(source)
        if isinstance(part, Mapping) and name in part:
            return part[name]
    return None


class Revealer:
    """Reveals sealed values in payloads read back from the trail; collects findings for what fails."""

    def __init__(self, store: KeyStore, ttl_s: float = 300.0) -> None:
        self.keys = KeyCache(store, ttl_s)
        self.findings: list[str] = []
        self.finding_count = 0

    def payload_text(self, text: str | None, event_id: str | None = None) -> str | None:
        """A payload as JSON text, its sealed values revealed (unchanged if it holds none)."""
        if text is None or SEALED_MARK not in text:
            return text
        try:
            payload = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        if not isinstance(payload, dict):
            return text
        return orjson.dumps(self.payload(payload, event_id)).decode()

    def payload(self, payload: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        """A copy of `payload` with its sealed values revealed (top-level fields and both sides of changes)."""
        opened = self._open_event(_v2_places(payload), event_id)
        out = {name: opened[name, 0] if (name, 0) in opened else self.value(name, value, event_id)
               for name, value in payload.items()}
        changes = payload.get("changes")
        if isinstance(changes, dict):
            out["changes"] = {name: [opened[name, where] if (name, where) in opened else self.value(name, v, event_id)
                                     for where, v in enumerate(pair, 1)] if isinstance(pair, list) else pair
                              for name, pair in changes.items()}
        return out

    def value(self, field: str, value: Any, event_id: str | None = None) -> Any:
        """The plaintext of a v1 sealed value, `[erased]`, or `[undecryptable]` with a finding; others unchanged.
        A v2 value is revealed with its event's other values (`payload`): alone it is a finding."""
        if not is_sealed(value):
            return value
        try:
            if is_sealed_v2(value):
                raise DecryptError("an enc:v2 value is revealed with its event's payload, not alone")
            key_id, body = parse_sealed(value)
            found = self._key(key_id)
            return found if isinstance(found, str) else found.reveal(field, body)
        except DecryptError as exc:
            self._finding(f"event {event_id or '?'}: payload field {field!r}: {exc}")
            return UNREADABLE

    def _open_event(self, sealed: dict[tuple[str, int], str], event_id: str | None) -> dict[tuple[str, int], Any]:
        """The revealed values of an event's v2 places (`[erased]`, or `[undecryptable]` with a finding each)."""
        if not sealed:
            return {}
        places = tuple(sorted(sealed))
        try:
            key_id, body = _envelope_of(places, sealed)
            found = self._key(key_id)
            if isinstance(found, str):
                return dict.fromkeys(places, found)
            return dict(zip(places, found.reveal_event(places, body), strict=True))
        except DecryptError as exc:
            for field, _ in places:
                self._finding(f"event {event_id or '?'}: payload field {field!r}: {exc}")
            return dict.fromkeys(places, UNREADABLE)

    def _key(self, key_id: str) -> DataKey | str:
        """The key of a key id, or `ERASED`; `DecryptError` for a key this store never had."""
        found = self.keys.lookup(key_id)
        if found == "erased":
            return ERASED
        if found == "unknown":
            raise DecryptError(f"key {key_id} is not in this key store (a different [erasure] store, or a "
                               "restored backup missing it)")
        return found

    def close(self) -> None:
        """Release the store's connections (the reader is done)."""
        self.keys.store.close()

    def subject_key_id(self, subject: str) -> str | None:
        """The key id of the subject's data key, if it has one (to find its events)."""
        key = self.keys.store.subject_key(subject)
        return None if key is None else key.key_id

    def _finding(self, text: str) -> None:
        self.finding_count += 1
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(text)


def _v2_places(payload: dict[str, Any]) -> dict[tuple[str, int], str]:
    """The payload's v2 values by place (see `crypto`): top-level fields, then each side of each change."""
    places = {(name, 0): value for name, value in payload.items() if is_sealed_v2(value)}
    changes = payload.get("changes")
    if isinstance(changes, dict):
        for name, pair in changes.items():
            if isinstance(pair, list):
                places.update(((name, where), v) for where, v in enumerate(pair, 1) if is_sealed_v2(v))
    return places


def _envelope_of(places: Places, sealed: dict[tuple[str, int], str]) -> tuple[str, bytes]:
    """`(key id, body)` of an event's one envelope; `DecryptError` if there is none, two, or the references name
    another key."""
    parsed = [parse_sealed_v2(sealed[place]) for place in places]
    envelopes = [(key_id, body) for key_id, body in parsed if body is not None]
    if len(envelopes) != 1:
        raise DecryptError(f"the event's enc:v2 values hold {len(envelopes)} envelopes, not one")
    key_id, body = envelopes[0]
    if any(other != key_id for other, _ in parsed):
        raise DecryptError(f"the event's enc:v2 values name other keys than their envelope's key {key_id}")
    return key_id, body


def revealer_for(config: Config) -> Revealer | None:
    """The revealer of the config's key store, or None when `[erasure]` is not configured."""
    if not config.erasure.configured:
        return None
    return Revealer(open_store(config.erasure), config.erasure.cache_ttl_s)
