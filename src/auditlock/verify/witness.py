"""What agents' witnesses recorded in their digests (`witness`: `archive.digest`, `agent.witness_guard`), checked.

- `witness.findings`: segments an agent set aside because they disagreed with what its witness saw
  (`rewritten before shipping`) or vanished from the spool (`witnessed segment missing`). Each is a finding of that
  kind: those events are not in the archive (they wait in the agent's `quarantine/`, with the witness's copy).
  A finding repeated by a later digest (a crash before the agent recorded it delivered) is reported once.
- `witness.heads`: per writer, the last line the witness saw before the batch shipped, as (seq, line hash). The
  archive's line of that writer and seq must hash to it; otherwise `witness mismatch` names the writer: the shipped
  chain is not the chain the agent witnessed. A head whose line is not in the archive is a seq gap (the events
  check reports it) or lies outside the selected months.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from auditlock.spool.witnessed import MISSING, REWRITTEN
from auditlock.verify.digests import DigestSet
from auditlock.verify.events import EventStreams
from auditlock.verify.findings import WITNESS_MISMATCH, Report


@dataclass(frozen=True)
class WitnessedHead:
    """A writer's line as a digest's witness saw it."""

    digest: str
    writer: str
    seq: int
    line_hash: str


def expect_heads(found: DigestSet, streams: EventStreams) -> list[WitnessedHead]:
    """The digests' witnessed heads; their lines are watched as the objects stream by."""
    heads = []
    for key, loaded in sorted(found.digests.items()):
        recorded = _witness(loaded.body).get("heads")
        for writer, head in (recorded.items() if isinstance(recorded, dict) else ()):
            if isinstance(head, dict) and type(head.get("seq")) is int and isinstance(head.get("hash"), str):
                heads.append(WitnessedHead(key, str(writer), head["seq"], head["hash"]))
                streams.watched.setdefault((str(writer), head["seq"]), [])
    return heads


def check_heads(heads: list[WitnessedHead], streams: EventStreams, report: Report) -> None:
    """Each witnessed head's line, where the archive holds it, hashes to what the witness saw."""
    for head in heads:
        seen = streams.watched.get((head.writer, head.seq))
        if not seen or any(line_hash == head.line_hash for line_hash, _type, _where in seen):
            continue
        line_hash, _type, where = seen[0]
        report.add(WITNESS_MISMATCH, f"writer {head.writer}",
                   f"seq {head.seq} (in {where}) hashes to {line_hash[:16]}…, the agent's witness saw "
                   f"{head.line_hash[:16]}… ({head.digest}): the shipped chain is not the one it witnessed")


def report_findings(found: DigestSet, report: Report) -> None:
    """The segments agents set aside as rewritten or missing, one finding each."""
    reported: set[tuple[str, str, str]] = set()
    for key, loaded in sorted(found.digests.items()):
        findings = _witness(loaded.body).get("findings")
        for finding in (findings if isinstance(findings, list) else ()):
            if not isinstance(finding, dict) or finding.get("finding") not in (REWRITTEN, MISSING):
                continue
            ident = (str(finding["finding"]), str(finding.get("segment")), str(finding.get("id")))
            if ident in reported:
                continue
            reported.add(ident)
            report.add(ident[0], f"segment {ident[1]:.80}",
                       f"{finding.get('detail')!s:.300} (writer {finding.get('writer')!s:.40}, witnessed up to seq "
                       f"{finding.get('witnessed_seq')!s:.20}; recorded in {key}): its events are not in the "
                       "archive; the agent set it aside in its spool's quarantine/ with the witness's copy")


def _witness(body: dict[str, Any]) -> dict[str, Any]:
    record = body.get("witness")
    return record if isinstance(record, dict) else {}
