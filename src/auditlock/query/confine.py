"""The one path-confinement helper: a local path derived from remote data (an object key) strictly under a root.

Every file the query cache (and the view, through it) creates from an archive key goes through
`confined_path`: a key with `..`, `.`, an empty or absolute part, a NUL or other control character, a part
over 255 bytes, or a symlink already in the way under the root is refused with `UnsafeCachePath`, never joined.
Keys reaching it have already passed `layout.parse_events_key`; this is the second wall, not the first.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from auditlock.query.errors import QueryError

MAX_PART_BYTES = 255  # NAME_MAX on Linux and macOS


class UnsafeCachePath(QueryError):
    """A remote name would make a local path outside the cache root (or through a symlink in it)."""


def confined_path(root: Path, relative: str) -> Path:
    """`root / relative`, checked part by part (see the module docstring); `UnsafeCachePath` otherwise."""
    parts = relative.split("/")
    for part in parts:
        problem = _bad_part(part)
        if problem:
            raise UnsafeCachePath(f"refusing the remote name {relative!r} as a cache path: {problem}; it is not an "
                                  "archive object (run `auditlock verify` to see what else is in the bucket)")
    path = root.joinpath(*parts)
    _refuse_symlinks(root, path, relative)
    return path


def _bad_part(part: str) -> str | None:
    if part in ("", ".", ".."):
        return f"it has a {part or 'empty'!r} part"
    if any(ord(char) < 0x20 or char == "\x7f" for char in part):
        return "it holds a control character"
    if len(os.fsencode(part)) > MAX_PART_BYTES:
        return f"a part is over {MAX_PART_BYTES} bytes"
    return None


def _refuse_symlinks(root: Path, path: Path, relative: str) -> None:
    """No part below the root that exists may be a symlink (the cache holds only directories and files)."""
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISLNK(mode):
            raise UnsafeCachePath(f"refusing the cache path of {relative!r}: {current} is a symlink; the cache "
                                  "holds only directories and files (remove the link)")
