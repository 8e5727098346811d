"""Findings and the verify report: what `auditlock verify` found, grouped by kind, as text or JSON.

Design
- A finding is a triple (kind, subject, detail). `kind` is one of the fixed names below — a stable vocabulary
  that scripts, alerts and docs/verify.md refer to; `subject` names the thing (an archive key relative to the
  prefix such as `events/year=2026/month=11/….jsonl.gz`, `writer <id>`, a segment file, an event id); `detail`
  says what is wrong in words an operator can act on.
- A report is clean exactly when it holds no finding *and* something was checked. An archive run that found
  no digest and no events object at all (a wrong bucket or prefix, a range before the first batch, a fresh
  deployment) is `nothing_to_verify`: not clean, not a finding either — it says nothing about integrity, and
  `auditlock verify` exits 3 for it. Open writers (still writing within `--open-grace`),
  skipped checks and notes are information, never findings: they do not change the exit status.
- Order is deterministic: findings print grouped by kind in the order of `KINDS`, then by subject, so two runs
  over the same archive give the same report (diffable, testable).
- JSON (`--format json`) is one object: {"clean", "nothing_to_verify", "source", "counts", "by_kind",
  "findings": [{"kind", "subject", "detail"}], "open_writers": [{"writer", "last_seq", "last_occurred_at"}],
  "skipped", "notes", "legal_holds": [keys under a legal hold]}.
- Legal holds (`auditlock legal-hold`) are information too: the report lists the keys (objects and digests) a
  hold keeps, with their count, after the findings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import IO, Any

import orjson

from auditlock.textsafe import terminal_safe

# Archive objects.
MISSING_OBJECT = "missing object"
DELETE_MARKER = "delete marker"
OVERWRITTEN_OBJECT = "overwritten object"
MODIFIED_OBJECT = "modified object"
SWAPPED_OBJECT = "swapped object"
UNLISTED_OBJECT = "unlisted object"
UNREADABLE_OBJECT = "unreadable object"
OBJECT_TOO_LARGE = "object too large"
FOREIGN_OBJECT = "foreign object"
UNLOCKED_OBJECT = "unlocked object"
UNDER_RETAINED_OBJECT = "under-retained object"
UNTAGGED_OBJECT = "untagged object"
# Digests.
BROKEN_DIGEST_CHAIN = "broken digest chain"
DIGEST_MODIFIED = "digest modified"
BAD_SIGNATURE = "bad signature"
UNKNOWN_SIGNING_KEY = "unknown signing key"
DIGEST_HASH_MISMATCH = "digest hash mismatch"
DIGEST_CLOSED_MISMATCH = "digest closed mismatch"
# The agent's witness (archive and spool).
REWRITTEN_BEFORE_SHIPPING = "rewritten before shipping"
WITNESSED_SEGMENT_MISSING = "witnessed segment missing"
WITNESS_MISMATCH = "witness mismatch"
# Events (archive and spool).
SEQ_GAP = "seq gap"
CHAIN_BREAK = "chain break"
DUPLICATE_EVENT = "duplicate event"
WRITER_TAIL_MISSING = "writer tail missing"
CAPTURE_GAP = "capture gap"  # an `auditlock.capture_gap` event: database changes `auditlock capture` could not record
# The spool.
TORN_TAIL = "torn tail"
DAMAGED_SEGMENT = "damaged segment"
QUARANTINED_SEGMENT = "quarantined segment"

KINDS = (
    MISSING_OBJECT, DELETE_MARKER, OVERWRITTEN_OBJECT, MODIFIED_OBJECT, SWAPPED_OBJECT, UNLISTED_OBJECT,
    UNREADABLE_OBJECT, OBJECT_TOO_LARGE, FOREIGN_OBJECT, BROKEN_DIGEST_CHAIN, DIGEST_MODIFIED, BAD_SIGNATURE,
    UNKNOWN_SIGNING_KEY, DIGEST_HASH_MISMATCH, DIGEST_CLOSED_MISMATCH, REWRITTEN_BEFORE_SHIPPING,
    WITNESSED_SEGMENT_MISSING, WITNESS_MISMATCH, SEQ_GAP, CHAIN_BREAK, DUPLICATE_EVENT, WRITER_TAIL_MISSING,
    CAPTURE_GAP,
    UNLOCKED_OBJECT, UNDER_RETAINED_OBJECT, UNTAGGED_OBJECT, TORN_TAIL, DAMAGED_SEGMENT, QUARANTINED_SEGMENT,
)


@dataclass(frozen=True, order=True)
class Finding:
    """One problem: its kind (see `KINDS`), what it concerns, and what is wrong."""

    kind: str
    subject: str
    detail: str


@dataclass(frozen=True)
class OpenWriter:
    """A writer without its clean-end record whose last event is recent enough that it may still be writing."""

    writer: str
    last_seq: int
    last_occurred_at: str


@dataclass
class Report:
    """Everything one verify run found and did."""

    source: str
    findings: list[Finding] = field(default_factory=list)
    open_writers: list[OpenWriter] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    nothing_to_verify: bool = False
    legal_holds: list[str] = field(default_factory=list)  # keys (objects and digests) under a legal hold

    def add(self, kind: str, subject: str, detail: str) -> None:
        """Record a finding."""
        self.findings.append(Finding(kind, subject, detail))

    def count(self, what: str, n: int = 1) -> None:
        """Add to a counter shown in the report (objects, events, digests, …)."""
        self.counts[what] = self.counts.get(what, 0) + n

    @property
    def clean(self) -> bool:
        """No findings, and something was checked."""
        return not self.findings and not self.nothing_to_verify

    @property
    def verdict(self) -> str:
        """The report's last line: clean, N findings, or nothing to verify."""
        if self.findings:
            return f"{len(self.findings)} findings"
        return "nothing to verify" if self.nothing_to_verify else "clean"

    def kinds(self) -> set[str]:
        """The kinds of finding present."""
        return {f.kind for f in self.findings}

    def by_kind(self) -> dict[str, list[Finding]]:
        """Findings grouped by kind, kinds in `KINDS` order, each group sorted by subject."""
        order = {kind: i for i, kind in enumerate(KINDS)}
        groups: dict[str, list[Finding]] = {}
        for finding in sorted(self.findings, key=lambda f: (order.get(f.kind, len(order)), f)):
            groups.setdefault(finding.kind, []).append(finding)
        return groups


def as_json(report: Report) -> dict[str, Any]:
    """The report as the JSON document described in the module docstring."""
    groups = report.by_kind()
    return {
        "clean": report.clean,
        "nothing_to_verify": report.nothing_to_verify,
        "source": report.source,
        "counts": report.counts,
        "by_kind": {kind: len(found) for kind, found in groups.items()},
        "findings": [asdict(f) for found in groups.values() for f in found],
        "open_writers": [asdict(w) for w in sorted(report.open_writers, key=lambda w: w.writer)],
        "skipped": report.skipped,
        "notes": report.notes,
        "legal_holds": sorted(report.legal_holds),
    }


def write_json(report: Report, out: IO[str]) -> None:
    """Write the report as one JSON object on one line."""
    out.write(orjson.dumps(as_json(report)).decode() + "\n")


def write_text(report: Report, out: IO[str]) -> None:
    """Write the report for a human: what was checked, findings grouped by kind, then information.

    Every line is written through `terminal_safe`: subjects and details quote keys, ids and file names from the
    archive or spool, which must not be able to rewrite the report (JSON stays exact).
    """
    def line(text: str) -> None:
        out.write(terminal_safe(text) + "\n")

    counts = ", ".join(f"{n} {what}" for what, n in report.counts.items())
    line(f"auditlock verify: {report.source}")
    line(f"checked: {counts or 'nothing'}")
    for kind, found in report.by_kind().items():
        out.write("\n")
        line(f"{kind} ({len(found)})")
        for f in found:
            line(f"  {f.subject}: {f.detail}")
    if report.open_writers:
        out.write("\n")
        line(f"open writers, not checked for a clean end ({len(report.open_writers)})")
        for w in sorted(report.open_writers, key=lambda w: w.writer):
            line(f"  writer {w.writer}: last seq {w.last_seq} at {w.last_occurred_at}")
    _write_legal_holds(report, out)
    for title, lines in (("skipped", report.skipped), ("notes", report.notes)):
        if lines:
            out.write(f"\n{title}\n")
            for text in lines:
                line(f"  {text}")
    out.write(f"\nresult: {report.verdict}\n")


def _write_legal_holds(report: Report, out: IO[str]) -> None:
    """Information, not a finding: which objects and digests a legal hold keeps (auditlock legal-hold)."""
    if report.legal_holds:
        out.write(f"\nunder a legal hold ({len(report.legal_holds)})\n")
        for key in sorted(report.legal_holds):
            out.write(terminal_safe(f"  {key}") + "\n")
