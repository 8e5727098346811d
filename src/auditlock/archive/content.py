"""Reading an events object's bytes as hostile input: bounded gunzip, lines streamed, lines readers can show.

Every reader (query's cache, the view through it, verify) decompresses an object with `gunzip_bounded`: a gzip
bomb (48 KB that inflate to gigabytes) stops at the bound with `ObjectTooLarge` instead of taking the memory.
The bound is `[sink] batch_max_bytes` (an agent never writes an object larger than a batch; default 64 MiB).
Lines are yielded one at a time (`split_lines`), never built into a list: a bomb of newlines would otherwise
cost ~40 bytes of Python objects per byte of content.

`unreadable_line` says why a line cannot be shown as an event: it is `spool.lines`' one definition of a valid
line (the writer's exact JSON form, typed columns, a real `occurred_at`, a class name, at most `MAX_LINE_DEPTH`
levels and `MAX_LINE_BYTES` bytes) — the definition the agent checks before it ships a line, so every line an
agent shipped is readable. An archived line that breaks it was written by someone else (or an old bug) and is
skipped with a note.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from auditlock.spool import lines
from auditlock.spool.lines import MAX_LINE_BYTES, MAX_LINE_DEPTH

__all__ = ["MAX_LINE_BYTES", "MAX_LINE_DEPTH", "ObjectTooLarge", "gunzip_bounded", "split_lines", "unreadable_line"]
_GZIP = 16 + zlib.MAX_WBITS


class ObjectTooLarge(ValueError):
    """An object inflates to more than the bound (a gzip bomb, or an object no agent wrote)."""


def gunzip_bounded(data: bytes, limit: int) -> bytes:
    """The decompressed content of `data` (one or more gzip members); `ObjectTooLarge` beyond `limit` bytes,
    `zlib.error`/`EOFError` for bytes that are not whole gzip."""
    out = bytearray()
    pending = data
    while pending:
        inflater = zlib.decompressobj(_GZIP)
        chunk_in = pending
        while not inflater.eof:
            chunk = inflater.decompress(chunk_in, limit + 1 - len(out))  # >= 1: 0 would mean "no limit"
            out += chunk
            if len(out) > limit:
                raise ObjectTooLarge(f"object too large: it inflates to more than {limit} bytes")
            chunk_in = inflater.unconsumed_tail
            if not chunk and not chunk_in:
                break
        if not inflater.eof:
            raise EOFError("compressed data ended before the end-of-stream marker was reached")
        pending = inflater.unused_data.lstrip(b"\x00")  # gzip allows zero padding after a member
    return bytes(out)


def split_lines(content: bytes) -> Iterator[bytes]:
    """The lines of `content` without their newlines, one at a time (a last line without newline included)."""
    start, end = 0, len(content)
    while start < end:
        stop = content.find(b"\n", start)
        if stop < 0:
            yield content[start:]
            return
        yield content[start:stop]
        start = stop + 1


def unreadable_line(line: bytes) -> str | None:
    """Why the readers cannot show this line (without its newline) as an event; None if they can."""
    if not line:
        return "an empty line"
    return lines.parse_line(line).problem
