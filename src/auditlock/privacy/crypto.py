"""The encrypted form of erasable values — **the format every reader of the trail relies on**.

Two forms (JSON strings in `payload.<field>` or either side of `payload.changes.<field>`); the handler writes v2,
every reader reads both, forever (v1 values sit in archives under Object Lock for years).

    enc:v2:<key id>:<base64 of nonce (12 bytes) || AES-256-GCM ciphertext and tag>    the event's envelope
    enc:v2:<key id>:@                                                                  a reference to it
    enc:v1:<key id>:<base64 of nonce || ciphertext and tag>                            one value (before v2)

Base64 is the standard alphabet, padded (it never holds `@`).

Invariants of both:
- A value's plaintext is the JSON text (orjson) of the value as `handler.encode` encoded it, so revealing gives
  back exactly what a plain field would hold. `None` is never encrypted: it stays null (nothing to hide).
- One data key per subject: 256 random bits (`AESGCM.generate_key`), named by a key id of 128 random bits as
  32 lowercase hex characters. The key id says nothing about the subject; only the key store links the two.
- A fresh random 96-bit nonce per AES-GCM call (from `os.urandom`, fetched 256 at a time into a pool: one
  syscall per 256 calls). A nonce never serves twice: the pool holds each slice of a batch once and `list.pop`
  (atomic under the GIL) hands it to one call of one thread; a forked child clears its copy of the pool
  (`os.register_at_fork`), so parent and child never seal with the same pooled nonce. With far fewer than 2**32
  calls per key, a collision of two random nonces is negligible.
- Erasing a subject deletes its data key from the store: every value sealed under it becomes unreadable for
  good, while the archive's bytes — and so its chain and digests — stay exactly as written.

v2 (issue #19: one AES-GCM call per event, not per value — inside the event path each call costs ~2 µs, more
than the rest of sealing together):
- An event's sealed values are **places**: `(field, where)`, `where` 0 for `payload.<field>`, 1 and 2 for the
  before and after side of `payload.changes.<field>` (1 + the index in the pair), in the canonical order: sorted
  by field, then `where`. An event's erasable values all belong to one subject (one key); the handler seals every
  non-null one in ONE call: the plaintext is the JSON array of the values in place order.
- The first place holds the envelope, every other place the reference `enc:v2:<key id>:@`. A reader finds the
  event's places by looking for `enc:v2:` values in the payload (top level and changes), sorts them, and opens
  the one envelope with all of them, wherever among them it sits (where it sits changes no value).
- The associated data binds the ciphertext to its subject and to the event's exact set of places:
  `auditlock/enc/v2 NUL` + the JSON text of `[subject, [[field, where], ...]]`. A reference moved to another
  field or side, added or removed, an envelope moved to another subject's key id or another event whose places
  differ: authentication fails (a finding for each of the event's values, never a wrong plaintext). Values cannot
  be swapped within an event (their order is inside the ciphertext). Copying a whole event's sealed values into
  another event of the same subject with the same places is not detected here — the spool's hash chain and the
  digests detect every such edit (as for v1).
- Malformed: no envelope, two, references under another key id than the envelope's, a plaintext that is not an
  array of exactly one value per place — each a finding for every value of the event.
- Readers reveal whole payloads (`erasable.Revealer.payload`): the query engine (so `auditlock query` and the
  admin view) and `auditlock subject export`, which finds a subject's events by `enc:v1:<key id>:` or
  `enc:v2:<key id>:` in the payload text. `Revealer.value` reveals a v1 value alone; a v2 one alone is a finding.
  `query --sql`, Athena and other readers of the objects see the archive's bytes.

v1 (one AES-GCM call per value; written until issue #19's v2, read forever): the associated data is
`auditlock/enc/v1 NUL subject NUL field`, so a value moved to another field or copied under another subject's
key id fails authentication; moving it between `before` and `after` of one field, or between events of one
subject, is detected by the chain and the digests only.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "enc:v1:"
PREFIX_V2 = "enc:v2:"
SEALED_PREFIXES = (PREFIX, PREFIX_V2)
SEALED_MARK = "enc:v"  # in the text of every payload that holds a sealed value (a cheap first test)
REFERENCE = "@"  # what follows a v2 reference's key id
ERASED = "[erased]"  # what every reader shows for a value whose subject was erased (the one definition)
UNREADABLE = "[undecryptable]"  # what readers show for a value that fails for another reason (with a finding)
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ID = re.compile(r"[0-9a-f]{32}\Z")
SUBJECT = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}:[^\x00-\x1f\x7f]{1,256}\Z")
_AAD_PREFIX = b"auditlock/enc/v1\x00"
_AAD_V2_PREFIX = b"auditlock/enc/v2\x00"
_PLACES_SHOWN = 10  # in a finding
_AAD_V2_CACHED = 256  # per key: the associated data of the sets of places seen most (an event type's shapes)
_json = orjson.dumps
_base64 = binascii.b2a_base64
_ID_CHARS = 32
MAX_SEALED_CHARS = 1 << 20
Places = tuple[tuple[str, int], ...]  # an event's sealed places: (field, 0 payload | 1 before | 2 after), sorted


class DecryptError(ValueError):
    """A sealed value that cannot be revealed for a reason other than erasure (the message names it)."""


class DataKey:
    """One subject's data key with its AES-GCM object ready (built once, reused for every value)."""

    __slots__ = ("_aad", "_aad_v2", "_aead", "_encrypt", "_envelope", "_prefix", "key", "key_id", "reference",
                 "subject")

    def __init__(self, key_id: str, subject: str, key: bytes) -> None:
        self.key_id = key_id
        self.subject = subject
        self.key = key
        self._aead = AESGCM(key)
        self._encrypt = self._aead.encrypt
        self._prefix = f"{PREFIX}{key_id}:"
        self._aad: dict[str, bytes] = {}  # per field: `associated_data(subject, field)`, built once
        self._envelope = f"{PREFIX_V2}{key_id}:"
        self.reference = f"{PREFIX_V2}{key_id}:{REFERENCE}"
        self._aad_v2: dict[Places, bytes] = {}  # per set of places: `event_associated_data(subject, places)`

    @classmethod
    def generate(cls, subject: str) -> DataKey:
        """A new random key for `subject`."""
        return cls(os.urandom(_ID_CHARS // 2).hex(), subject, AESGCM.generate_key(bit_length=KEY_BYTES * 8))

    def seal_event(self, places: Places, values: Sequence[Any]) -> str:
        """The v2 envelope sealing an event's encoded values (one per place, in place order) in one call; every
        other place of the event holds `self.reference`."""
        try:
            aad = self._aad_v2[places]
        except KeyError:
            aad = self._event_aad(places)
        try:
            nonce = _nonces.pop()
        except IndexError:
            nonce = _refill_nonces()
        return self._envelope + _base64(nonce + self._encrypt(nonce, _json(values), aad), newline=False).decode()

    def _event_aad(self, places: Places) -> bytes:
        if len(self._aad_v2) >= _AAD_V2_CACHED:
            self._aad_v2.clear()
        aad = self._aad_v2[places] = event_associated_data(self.subject, places)
        return aad

    def reveal_event(self, places: Places, body: bytes) -> list[Any]:
        """The values of a v2 envelope's body (nonce ‖ ciphertext), one per place; `DecryptError` otherwise."""
        try:
            plain = self._aead.decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:],
                                       event_associated_data(self.subject, places))
        except InvalidTag:
            raise DecryptError(f"key {self.key_id}: the event's sealed values do not authenticate for its fields "
                               f"{_shown_places(places)} of {self.subject!r} (altered, or moved from another "
                               "field, event or subject)") from None
        try:
            values = orjson.loads(plain)
        except orjson.JSONDecodeError:
            raise DecryptError(f"key {self.key_id}: the decrypted values are not JSON") from None
        if not isinstance(values, list) or len(values) != len(places):
            raise DecryptError(f"key {self.key_id}: the decrypted values are not one per sealed field")
        return values

    def seal(self, field: str, encoded: Any) -> str:
        """`enc:v1:...` of an encoded (JSON-native) value of `field` — the v1 form, which the handler no longer
        writes: kept as the reference of what archives hold (tests write v1 values with it)."""
        # The per-value path: one dict lookup, one nonce, one encryption, one base64 (module-level names, no
        # attribute lookups on modules).
        try:
            aad = self._aad[field]
        except KeyError:
            aad = self._aad[field] = associated_data(self.subject, field)
        try:
            nonce = _nonces.pop()
        except IndexError:
            nonce = _refill_nonces()
        sealed = self._encrypt(nonce, _json(encoded), aad)
        return self._prefix + _base64(nonce + sealed, newline=False).decode()

    def reveal(self, field: str, body: bytes) -> Any:
        """The value of a parsed sealed value's body (nonce ‖ ciphertext); `DecryptError` if it does not open."""
        try:
            plain = self._aead.decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], associated_data(self.subject, field))
        except InvalidTag:
            raise DecryptError(f"key {self.key_id}: the value does not authenticate for field {field!r} of "
                               f"{self.subject!r} (altered, or moved from another field or subject)") from None
        try:
            return orjson.loads(plain)
        except orjson.JSONDecodeError:
            raise DecryptError(f"key {self.key_id}: the decrypted value is not JSON") from None


def _refill_nonces() -> bytes:
    """One nonce now, and 255 more into `_nonces` (one `os.urandom` call: a syscall per value would cost more
    than the encryption; the batch cut into nonces at C speed, `map` over fixed slices). `list.pop` hands each out
    once, to one thread."""
    batch = os.urandom(NONCE_BYTES * _NONCE_BATCH)
    _nonces.extend(map(batch.__getitem__, _NONCE_SLICES))
    return batch[:NONCE_BYTES]


_NONCE_BATCH = 256
_NONCE_SLICES = tuple(slice(i, i + NONCE_BYTES) for i in range(NONCE_BYTES, NONCE_BYTES * _NONCE_BATCH, NONCE_BYTES))
_nonces: list[bytes] = []
os.register_at_fork(after_in_child=_nonces.clear)  # a child never uses the nonces its parent goes on using


def associated_data(subject: str, field: str) -> bytes:
    """What binds a ciphertext to its subject and field (see the module's invariants)."""
    return _AAD_PREFIX + subject.encode() + b"\x00" + field.encode()


def event_associated_data(subject: str, places: Places) -> bytes:
    """What binds a v2 envelope to its subject and its event's places (see the module's invariants)."""
    return _AAD_V2_PREFIX + orjson.dumps([subject, places])


def _shown_places(places: Places) -> str:
    """The places for a finding: at most `_PLACES_SHOWN`, each name cut to 64 characters (a payload is hostile)."""
    shown = [repr(field[:64]) if where == 0 else f"changes.{field[:64]!r}[{where - 1}]"
             for field, where in places[:_PLACES_SHOWN]]
    more = f" and {len(places) - _PLACES_SHOWN} more" if len(places) > _PLACES_SHOWN else ""
    return ", ".join(shown) + more


def is_sealed(value: object) -> bool:
    """Whether a payload value is in a sealed form, v1 or v2 (cheap: a prefix test)."""
    return isinstance(value, str) and value.startswith(SEALED_PREFIXES)


def is_sealed_v2(value: object) -> bool:
    """Whether a payload value is a v2 envelope or reference."""
    return isinstance(value, str) and value.startswith(PREFIX_V2)


def parse_sealed(value: str) -> tuple[str, bytes]:
    """`(key id, nonce ‖ ciphertext)` of a sealed value (v1, or a v2 envelope); `DecryptError` naming what is
    malformed (a v2 reference holds no ciphertext: `parse_sealed_v2`)."""
    key_id, text = _key_id_and_text(value)
    if text == REFERENCE and value.startswith(PREFIX_V2):
        raise DecryptError(f"key {key_id}: a reference to its event's sealed values holds none itself")
    return key_id, _body(key_id, text)


def parse_sealed_v2(value: str) -> tuple[str, bytes | None]:
    """`(key id, nonce ‖ ciphertext)` of a v2 envelope, `(key id, None)` of a reference; `DecryptError` naming
    what is malformed."""
    key_id, text = _key_id_and_text(value)
    return key_id, None if text == REFERENCE else _body(key_id, text)


def _body(key_id: str, text: str) -> bytes:
    """The nonce ‖ ciphertext a sealed value's base64 text holds."""
    try:
        body = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptError(f"key {key_id}: the sealed value is not base64") from None
    if len(body) < NONCE_BYTES + TAG_BYTES:
        raise DecryptError(f"key {key_id}: the sealed value is too short to hold a nonce and a tag")
    return body


def _key_id_and_text(value: str) -> tuple[str, str]:
    if len(value) > MAX_SEALED_CHARS:
        raise DecryptError(f"a sealed value of {len(value)} characters is over the bound {MAX_SEALED_CHARS}")
    key_id, sep, text = value[len(PREFIX):].partition(":")  # both prefixes are 7 characters
    if not sep or not KEY_ID.match(key_id):
        raise DecryptError("a sealed value without a valid key id (32 lowercase hex characters)")
    return key_id, text
