"""`python -m auditlock` is the `auditlock` command."""

from auditlock.cli import console

console()
