"""Errors of the query room: `QueryError` (exit 1) and `UsageError` (bad input; exit 2, names the flag)."""

from __future__ import annotations

from auditlock.errors import AuditlockError


class QueryError(AuditlockError):
    """The archive could not be read or queried (S3 access, a missing bucket, a damaged object)."""


class UsageError(QueryError):
    """An argument is wrong; `flag` names it, the message says what is wrong and what is accepted."""

    def __init__(self, flag: str, problem: str) -> None:
        super().__init__(f"argument {flag}: {problem}")
        self.flag = flag
        self.problem = problem
