"""Celery: every task run is a named job — actor `job:<task name>`, its task id as `payload.job_run_id`.

    from auditlock.integrations import celery as audit_celery
    audit_celery.install(app)          # where the Celery app is created, so forked pool children inherit it

`task_prerun` enters `auditlock.job(task.name, run_id=task.request.id)` and `task_postrun` leaves it. Celery
sends both from the thread (and contextvars context) that runs the task, with `task_postrun` in a `finally`,
so the job is also left after a failure, a retry or a rejection — a separate `task_failure` handler would only
undo it early, before other `task_failure` handlers ran. Eager tasks (`task_always_eager`), tasks applied
inside other tasks, and the prefork, threads and solo pools all work: the binding lives in the task run's own
context and nests. Celery is imported only by this module.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any

from celery import signals  # type: ignore[import-untyped]

from auditlock.handler.context import Actor, job

_ALL_APPS = object()
_DISPATCH_UID = "auditlock.integrations.celery"
_installed_for: list[object] = []  # Celery apps whose tasks are bound, or _ALL_APPS
# Jobs entered by task_prerun and not yet left: (task id, its job binding), innermost last.
_runs: ContextVar[tuple[tuple[str, AbstractContextManager[Actor]], ...]] = ContextVar(
    "auditlock_celery_runs", default=()
)


def install(app: Any = None) -> None:
    """Run every task of `app` (every Celery app, if None) as `auditlock.job(task.name, run_id=<task id>)`.

    Idempotent. Call it when the app is created (module level), so worker processes forked later have it.
    """
    key = _ALL_APPS if app is None else app
    if not any(installed is key for installed in _installed_for):
        _installed_for.append(key)
    signals.task_prerun.connect(_enter_job, weak=False, dispatch_uid=_DISPATCH_UID)
    signals.task_postrun.connect(_leave_job, weak=False, dispatch_uid=_DISPATCH_UID)


def uninstall(app: Any = None) -> None:
    """Undo `install(app)`; once nothing is installed, the signal handlers are disconnected."""
    key = _ALL_APPS if app is None else app
    _installed_for[:] = [installed for installed in _installed_for if installed is not key]
    if not _installed_for:
        signals.task_prerun.disconnect(_enter_job, dispatch_uid=_DISPATCH_UID)
        signals.task_postrun.disconnect(_leave_job, dispatch_uid=_DISPATCH_UID)


def _applies_to(task: Any) -> bool:
    return any(installed is _ALL_APPS or installed is task.app for installed in _installed_for)


def _enter_job(sender: Any = None, task_id: str | None = None, task: Any = None, **_: Any) -> None:
    task = task if task is not None else sender
    if task is None or task_id is None or not _applies_to(task):
        return
    binding = job(task.name, run_id=task_id)
    binding.__enter__()
    _runs.set((*_runs.get(), (task_id, binding)))


def _leave_job(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
    runs = _runs.get()
    if all(run_id != task_id for run_id, _binding in runs):
        return
    while runs:  # innermost first; an inner run left unended (it should not happen) is left here too
        (run_id, binding), runs = runs[-1], runs[:-1]
        _runs.set(runs)
        binding.__exit__(None, None, None)
        if run_id == task_id:
            return
