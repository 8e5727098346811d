"""A second real user for the witness's two-UID test (CI runs as root): the application's user.

Created once with `useradd --system` (idempotent; kept, like any system user a package adds). `shared_root` is a
directory under /tmp that user can reach (pytest's own tmp_path is private to root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

APP_USER = "auditlock-witness-app"


@dataclass(frozen=True)
class AppUser:
    """The application's user and group ids."""

    name: str
    uid: int
    gid: int


@pytest.fixture
def app_user() -> AppUser:
    """The application's user (created if needed); the test is skipped when not run as root."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create and switch to a second user")
    try:
        entry = pwd.getpwnam(APP_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", APP_USER],
                       check=True, capture_output=True)
        entry = pwd.getpwnam(APP_USER)
    return AppUser(APP_USER, entry.pw_uid, entry.pw_gid)


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A fresh directory (0755) under /tmp that every user can traverse; removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="auditlock-witness-uids-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
