"""The encrypted form of an erasable value — **the format every reader of the trail relies on**.

Format (a JSON string in `payload.<field>` or either side of `payload.changes.<field>`):

    enc:v1:<key id>:<base64 (standard alphabet, padded) of nonce (12 bytes) || AES-256-GCM ciphertext and tag>

Invariants:
- The plaintext is the JSON text (orjson) of the value as `handler.encode` encoded it, so revealing gives back
  exactly what a plain field would hold. `None` is never encrypted: it stays null (nothing to hide).
- One data key per subject: 256 random bits (`AESGCM.generate_key`), named by a key id of 128 random bits as
  32 lowercase hex characters. The key id says nothing about the subject; only the key store links the two.
- A fresh random 96-bit nonce per value (from `os.urandom`, fetched 256 at a time; a forked child never uses
  its parent's). With far fewer than 2**32 values per key, a nonce collision is negligible.
- The associated data binds a ciphertext to its subject and field: `auditlock/enc/v1 NUL subject NUL field`.
  A value moved to another field or copied under another subject's key id fails authentication (a finding,
  never a wrong plaintext). Moving it between `before` and `after` of one field, or between events of one
  subject, is not detected here — the spool's hash chain and the digests detect every such edit.
- Erasing a subject deletes its data key from the store: every value sealed under it becomes unreadable for
  good, while the archive's bytes — and so its chain and digests — stay exactly as written.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "enc:v1:"
ERASED = "[erased]"  # what every reader shows for a value whose subject was erased (the one definition)
UNREADABLE = "[undecryptable]"  # what readers show for a value that fails for another reason (with a finding)
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ID = re.compile(r"[0-9a-f]{32}\Z")
SUBJECT = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}:[^\x00-\x1f\x7f]{1,256}\Z")
_AAD_PREFIX = b"auditlock/enc/v1\x00"
_json = orjson.dumps
_base64 = binascii.b2a_base64
_ID_CHARS = 32
MAX_SEALED_CHARS = 1 << 20


class DecryptError(ValueError):
    """A sealed value that cannot be revealed for a reason other than erasure (the message names it)."""


class DataKey:
    """One subject's data key with its AES-GCM object ready (built once, reused for every value)."""

    __slots__ = ("_aad", "_aead", "_encrypt", "_prefix", "key", "key_id", "subject")

    def __init__(self, key_id: str, subject: str, key: bytes) -> None:
        self.key_id = key_id
        self.subject = subject
        self.key = key
        self._aead = AESGCM(key)
        self._encrypt = self._aead.encrypt
        self._prefix = f"{PREFIX}{key_id}:"
        self._aad: dict[str, bytes] = {}  # per field: `associated_data(subject, field)`, built once

    @classmethod
    def generate(cls, subject: str) -> DataKey:
        """A new random key for `subject`."""
        return cls(os.urandom(_ID_CHARS // 2).hex(), subject, AESGCM.generate_key(bit_length=KEY_BYTES * 8))

    def seal(self, field: str, encoded: Any) -> str:
        """`enc:v1:...` of an encoded (JSON-native) value of `field`."""
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
    than the encryption). `list.pop` hands each out once, to one thread."""
    batch = os.urandom(NONCE_BYTES * _NONCE_BATCH)
    _nonces.extend(batch[i:i + NONCE_BYTES] for i in range(NONCE_BYTES, len(batch), NONCE_BYTES))
    return batch[:NONCE_BYTES]


_NONCE_BATCH = 256
_nonces: list[bytes] = []
os.register_at_fork(after_in_child=_nonces.clear)  # a child never uses the nonces its parent goes on using


def associated_data(subject: str, field: str) -> bytes:
    """What binds a ciphertext to its subject and field (see the module's invariants)."""
    return _AAD_PREFIX + subject.encode() + b"\x00" + field.encode()


def is_sealed(value: object) -> bool:
    """Whether a payload value is in the sealed form (cheap: a prefix test)."""
    return isinstance(value, str) and value.startswith(PREFIX)


def parse_sealed(value: str) -> tuple[str, bytes]:
    """`(key id, nonce ‖ ciphertext)` of a sealed value; `DecryptError` naming what is malformed."""
    if len(value) > MAX_SEALED_CHARS:
        raise DecryptError(f"a sealed value of {len(value)} characters is over the bound {MAX_SEALED_CHARS}")
    key_id, sep, text = value[len(PREFIX):].partition(":")
    if not sep or not KEY_ID.match(key_id):
        raise DecryptError("a sealed value without a valid key id (32 lowercase hex characters)")
    try:
        body = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptError(f"key {key_id}: the sealed value is not base64") from None
    if len(body) < NONCE_BYTES + TAG_BYTES:
        raise DecryptError(f"key {key_id}: the sealed value is too short to hold a nonce and a tag")
    return key_id, body
