"""The one output escaper: untrusted text made safe to show on a terminal.

Actor ids, object keys, file names, tag values and error messages quoting them may come from a hostile archive or
spool. Written raw to a terminal, an escape sequence (`ESC [2J`) clears the screen and rewrites what a report
says, a carriage return or backspace overwrites the start of a line, a newline forges a line of its own, and a
bidi override (U+202E) shows text reversed. Every human-facing output (the `query` table, the `verify` text
report, the CLI's messages, the demo) passes such text through `terminal_safe`; JSON, JSONL and CSV outputs are
data and stay exact.

What is escaped: every character `str.isprintable()` refuses — C0 controls (including newline and tab), DEL,
C1 controls (U+0080–U+009F), format characters such as bidi overrides and zero-width spaces (Cf), line and
paragraph separators, surrogates, private-use and unassigned code points, and spaces other than U+0020. They
are shown the way Python writes them in a string literal: `\\n`, `\\r`, `\\t`, else `\\x1b`, `\\u202e`,
`\\U000e0001`. Backslashes themselves are not doubled: the output is for reading, and the exact value is one
`--format jsonl` away.

Imports nothing: the handler may use it without adding to the application's import cost.
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def terminal_safe(text: str) -> str:
    """`text` with every non-printable character escaped (see the module docstring); printable text unchanged."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escaped(char) for char in text)


def error_text(exc: BaseException) -> str:
    """An error's message for a terminal, escaped; only the line breaks of a list of problems are kept."""
    problems = getattr(exc, "problems", None)  # ConfigError: a header, then one "  - problem" line each
    if isinstance(problems, list) and len(problems) > 1:
        header = str(exc).partition("\n")[0]
        return "\n".join([terminal_safe(header), *(f"  - {terminal_safe(str(p))}" for p in problems)])
    return terminal_safe(str(exc))


def _escaped(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
