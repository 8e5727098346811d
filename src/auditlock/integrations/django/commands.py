"""Management commands run as a named job: `job:<command>` (e.g. `job:migrate`, `job:close_orders`).

Django sends no signal when a command starts, so `install()` wraps `BaseCommand.execute` (once per process):
`call_command()` and `manage.py <command>` both pass through it. The command's name is its module's last part,
as `manage.py` spells it. A command that binds an actor of its own (`with auditlock.actor(...)`) wins inside its
block, as everywhere. When the command ends, the attempt of a statement that failed outside any transaction is
written under the job (`transactions.flush_every_thread`).
"""

from __future__ import annotations

import functools
from typing import Any

from django.core.management.base import BaseCommand

from auditlock.handler.context import job
from auditlock.integrations.django import transactions

_INSTALLED = "_auditlock_job_wrapped"


def install() -> None:
    """Wrap `BaseCommand.execute` so every command runs inside `auditlock.job(<command>)` (idempotent)."""
    if getattr(BaseCommand, _INSTALLED, False):
        return
    original = BaseCommand.execute

    @functools.wraps(original)
    def execute(self: BaseCommand, *args: Any, **options: Any) -> Any:
        with job(command_name(self)):
            try:
                return original(self, *args, **options)
            finally:
                transactions.flush_every_thread()  # a failed statement nothing audited followed, in the job

    BaseCommand.execute = execute
    setattr(BaseCommand, _INSTALLED, True)


def command_name(command: BaseCommand) -> str:
    """`manage.py`'s name of a command: the last part of its module (`...commands.close_orders`)."""
    return type(command).__module__.rpartition(".")[2] or type(command).__name__.lower()
