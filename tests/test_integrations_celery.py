"""Celery tasks run as named jobs: actor job:<task name>, the task id as payload.job_run_id, in a real Celery."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

import auditlock
from auditlock import EventError
from auditlock.config import Config
from auditlock.integrations import celery as audit_celery
from auditlock.integrations.emit import emit_event
from tests.support.spool_files import spool_events
from tests.support.waiting import wait_for

# How long threads and the worker may take on a loaded machine; every wait ends as soon as its condition holds.
THREADS_TIMEOUT_S = 120.0


@pytest.fixture
def app() -> Iterator[Celery]:
    """An eager Celery app (memory broker) with auditlock installed for it."""
    app = Celery("shop", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    audit_celery.install(app)
    yield app
    audit_celery.uninstall(app)


def add_tasks(app: Celery, audit_log: logging.Logger) -> dict[str, Any]:
    """Tasks that emit an audit event: a plain one, a failing one and one that applies another task."""
    seen: list[object] = []

    @app.task(shared=False, name="shop.mark_paid")
    def mark_paid(order_id: int) -> None:
        seen.append(auditlock.current_actor())
        emit_event(audit_log, "order.updated", target_type="Order", target_id=order_id, status="paid")

    @app.task(shared=False, name="shop.explode")
    def explode() -> None:
        emit_event(audit_log, "order.deleted", target_type="Order", target_id=1)
        raise RuntimeError("boom")

    @app.task(shared=False, name="shop.nightly")
    def nightly() -> None:
        mark_paid.apply(args=(2,))
        emit_event(audit_log, "order.updated", target_type="Order", target_id=3, status="paid")

    return {"mark_paid": mark_paid, "explode": explode, "nightly": nightly, "seen": seen}


class TestEagerTasks:
    def test_task_is_a_job_with_its_task_id(self, app: Celery, audit_log: logging.Logger, config: Config) -> None:
        """An eager task's event has actor job:<task name>, type job, and payload.job_run_id = the task id."""
        tasks = add_tasks(app, audit_log)
        result = tasks["mark_paid"].delay(5)
        [event] = spool_events(config.spool.dir)
        assert (event["actor_id"], event["actor_type"]) == ("job:shop.mark_paid", "job")
        assert event["payload"] == {"status": "paid", "job_run_id": result.id}

    def test_binding_is_gone_after_the_task(self, app: Celery, audit_log: logging.Logger) -> None:
        """After the task, the caller's binding is back."""
        tasks = add_tasks(app, audit_log)
        with auditlock.actor("user#1"):
            tasks["mark_paid"].delay(5)
            assert auditlock.current_actor() == auditlock.Actor("user#1", "user")
        assert auditlock.current_actor() is None
        assert [getattr(a, "id", None) for a in tasks["seen"]] == ["job:shop.mark_paid"]

    def test_binding_is_gone_after_a_failure(self, app: Celery, audit_log: logging.Logger, config: Config) -> None:
        """A task that raises is left as a job too; its event before the error is attributed."""
        tasks = add_tasks(app, audit_log)
        with pytest.raises(RuntimeError, match="boom"):
            tasks["explode"].delay()
        assert auditlock.current_actor() is None
        assert [e["actor_id"] for e in spool_events(config.spool.dir)] == ["job:shop.explode"]

    def test_nested_tasks(self, app: Celery, audit_log: logging.Logger, config: Config) -> None:
        """A task applied inside another is its own run; the outer run is bound again after it."""
        tasks = add_tasks(app, audit_log)
        outer = tasks["nightly"].delay()
        inner, after = spool_events(config.spool.dir)
        assert inner["actor_id"] == "job:shop.mark_paid"
        assert inner["payload"]["job_run_id"] != outer.id
        assert (after["actor_id"], after["payload"]["job_run_id"]) == ("job:shop.nightly", outer.id)
        assert auditlock.current_actor() is None

    def test_each_run_has_its_own_id(self, app: Celery, audit_log: logging.Logger, config: Config) -> None:
        """Two runs of a task carry their two task ids."""
        tasks = add_tasks(app, audit_log)
        ids = [tasks["mark_paid"].delay(n).id for n in range(2)]
        assert [e["payload"]["job_run_id"] for e in spool_events(config.spool.dir)] == ids

    def test_concurrent_threads_never_mix(self, app: Celery, audit_log: logging.Logger, config: Config) -> None:
        """Tasks applied from 20 threads at once each carry their own run id."""
        # Generous: the barrier only waits for 20 threads to start. A thread that fails aborts it, so the others
        # stop at once and the failure is reported, rather than every thread waiting out the timeout.
        barrier = threading.Barrier(20, timeout=THREADS_TIMEOUT_S)

        @app.task(shared=False, name="shop.together")
        def together(order_id: int) -> None:
            barrier.wait()
            emit_event(audit_log, "order.updated", target_type="Order", target_id=order_id)

        # Create the task before the threads use it, as an application (or a worker, at start) does: Celery builds a
        # lazily declared task on first use and registers it before binding it to the app, so a thread racing that
        # first use can get the task without its request stack ('NoneType' object has no attribute 'push').
        assert together.name == "shop.together"
        ids: dict[str, str] = {}
        failures: list[str] = []

        def run(n: int) -> None:
            try:
                ids[str(n)] = together.delay(n).id
            except BaseException as exc:  # reported by the test thread below
                failures.append(f"thread {n}: {type(exc).__name__}: {exc}")
                barrier.abort()

        threads = [threading.Thread(target=run, args=(n,), name=f"together-{n}") for n in range(20)]
        for thread in threads:
            thread.start()
        wait_for(lambda: not any(t.is_alive() for t in threads), THREADS_TIMEOUT_S, what="20 task threads ending")
        assert not failures, "\n".join(failures)
        written = spool_events(config.spool.dir)
        assert {e["target_id"]: e["payload"]["job_run_id"] for e in written} == ids

    def test_other_apps_are_not_bound(self, app: Celery, audit_log: logging.Logger) -> None:
        """install(app) binds that app's tasks only: another app's task has no actor."""
        other = Celery("other", broker="memory://", set_as_current=False)
        other.conf.task_always_eager = True
        other.conf.task_eager_propagates = True

        @other.task(shared=False, name="other.work")
        def work() -> None:
            emit_event(audit_log, "order.created", target_type="Order")

        with pytest.raises(EventError, match="has no actor"):
            work.delay()

    def test_uninstall(self, app: Celery, audit_log: logging.Logger) -> None:
        """After uninstall, tasks are no longer bound (and audit events in them are refused)."""
        tasks = add_tasks(app, audit_log)
        audit_celery.uninstall(app)
        try:
            with pytest.raises(EventError, match="has no actor"):
                tasks["mark_paid"].delay(1)
        finally:
            audit_celery.install(app)


class TestWorker:
    def test_task_in_a_worker_thread(self, audit_log: logging.Logger, config: Config) -> None:
        """A task consumed by a real worker (threads pool, memory broker) runs as its job with its task id."""
        app = Celery("worker", broker="memory://", backend="cache+memory://", set_as_current=False)
        app.conf.broker_transport_options = {"polling_interval": 0.01}
        audit_celery.install()

        @app.task(shared=False, name="shop.worker_task")
        def worker_task(order_id: int) -> None:
            emit_event(audit_log, "order.updated", target_type="Order", target_id=order_id, status="paid")

        try:
            with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, loglevel="WARNING"):
                results = [worker_task.delay(n) for n in range(4)]
                for result in results:
                    result.get(timeout=THREADS_TIMEOUT_S)  # ends when the worker answers
        finally:
            audit_celery.uninstall()
        written = spool_events(config.spool.dir)
        assert {(e["target_id"], e["actor_id"], e["payload"]["job_run_id"]) for e in written} == {
            (str(n), "job:shop.worker_task", result.id) for n, result in enumerate(results)}
