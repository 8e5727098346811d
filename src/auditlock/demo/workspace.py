"""The demo's directory: config, hmac and signing keys, spool, query cache, and a local copy of the archive."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from auditlock.config import Config

PREFIX = "auditlock"

CONFIG = """\
# Written by `auditlock demo`. Every key is documented in docs/configuration.md.
service = "shop-api"

[spool]
dir = "spool"                      # relative paths are relative to this file
durability = "group"

[events]
include = ["order.*", "customer.*", "auth.*", "access.*", "data.*"]

[targets.Order]
fields = ["status", "total", "currency", "customer_email"]
hmac = ["customer_email"]
retention = "orders"

[targets.Customer]
fields = ["name", "email", "country"]
hmac = ["email"]
sensitive_reads = true             # data.accessed on a Customer needs justification=

[targets.User]
fields = ["roles", "disabled"]

[hmac]
key_file = "hmac.key"

[retention]
default = "standard"

[retention.classes.standard]
days = 400
mode = "GOVERNANCE"

[retention.classes.orders]         # orders: 10 years, nobody can shorten or delete
days = 3650
mode = "COMPLIANCE"

[retention.classes.security]       # PCI DSS 10.5.1: at least a year
days = 400
mode = "COMPLIANCE"

[retention.events]
"auth.*" = "security"
"access.*" = "security"

[sink]
bucket = "{bucket}"
prefix = "{prefix}"
region = "us-east-1"
endpoint_url = "{endpoint}"        # the demo's embedded S3 server (gone when the demo ends)

[agent]
signing_key_file = "digest-key.pem"
"""


@dataclass(frozen=True)
class Workspace:
    """Paths of one demo run under `root`."""

    root: Path

    @property
    def config_path(self) -> Path:
        """The auditlock.toml the service and the agent read."""
        return self.root / "auditlock.toml"

    @property
    def spool(self) -> Path:
        """The spool directory."""
        return self.root / "spool"

    @property
    def cache(self) -> Path:
        """The query cache."""
        return self.root / "cache"

    @property
    def archive(self) -> Path:
        """The local copy of the archive prefix (for `auditlock verify --source`)."""
        return self.root / "archive"

    @property
    def public_key(self) -> Path:
        """The digest-signing public key (PEM)."""
        return self.root / "digest-key.pub.pem"

    def write(self, bucket: str, endpoint: str) -> None:
        """Write the config, a random hmac key and an Ed25519 signing key pair."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)  # kept by `--keep`: for this user only
        self.config_path.write_text(CONFIG.format(bucket=bucket, prefix=PREFIX, endpoint=endpoint))
        _write_private(self.root / "hmac.key", secrets.token_hex(32).encode())
        private_pem, public_pem = _ed25519_pair()
        _write_private(self.root / "digest-key.pem", private_pem)
        self.public_key.write_bytes(public_pem)

    def load_config(self) -> Config:
        """The demo's config, ignoring any AUDITLOCK_* overrides in the caller's environment."""
        from auditlock.config import load_config  # noqa: PLC0415

        return load_config(self.config_path, environ=without_overrides(os.environ))

    def copy_archive(self, client: S3Client, bucket: str) -> int:
        """Download every object under the prefix into `archive/` (keys relative to the prefix); returns the count."""
        count = 0
        self.archive.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.archive, 0o700)  # the copy of the audit trail is as private as the spool it came from
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}/"):
            for item in page.get("Contents", []):
                path = self.archive / item["Key"][len(PREFIX) + 1:]
                _private_dirs(self.archive, path.parent)
                _write_private(path, client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
                count += 1
        return count


def without_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment without `AUDITLOCK_*` variables, so a developer's own overrides cannot bend the demo."""
    return {k: v for k, v in environ.items() if not k.startswith("AUDITLOCK_")}


def _private_dirs(top: Path, path: Path) -> None:
    """Create `path` and its parents below `top`, each 0700 (`mkdir(parents=True)` gives parents the umask's mode)."""
    for directory in [*reversed(path.relative_to(top).parents), path.relative_to(top)]:
        (top / directory).mkdir(mode=0o700, exist_ok=True)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, 0o600)  # explicit: not whatever the umask or an earlier file left
        f.write(data)


def _ed25519_pair() -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public
