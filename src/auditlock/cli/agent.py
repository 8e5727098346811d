"""`auditlock agent [--once]`: the sidecar that ships the spool to S3 (extra `agent`)."""

from __future__ import annotations

import argparse
import logging
import sys

from auditlock.config import load_config
from auditlock.errors import AuditlockError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of agent."""
    parser.add_argument("--config", help="config file (default: $AUDITLOCK_CONFIG, else ./auditlock.toml)")
    parser.add_argument("--once", action="store_true", help="drain the spool and exit (batch jobs, tests)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def run(args: argparse.Namespace) -> int:
    """Run the agent; exit 1 with a clear message on configuration or lock errors."""
    from auditlock.agent import failpoints, signals  # noqa: PLC0415 - standard library only

    signals.install_early()  # first: a SIGTERM during the slow imports below must still lead to a drain
    configure_json_logging(args.log_level)
    failpoints.pause("startup", signals.wait_early)
    try:
        from auditlock.agent.service import Agent  # noqa: PLC0415 - boto3/watchfiles only for this command
    except ImportError as exc:
        print(f"auditlock agent needs the 'agent' extra: pip install 'auditlock[agent]' ({exc})", file=sys.stderr)
        return 1
    try:
        return _run(Agent, args)
    except AuditlockError as exc:
        logging.getLogger("auditlock.agent").error("auditlock agent: %s", exc)
        return 1


def _run(agent_class: type, args: argparse.Namespace) -> int:
    from auditlock.agent.service import agent_lock  # noqa: PLC0415

    config = load_config(args.config)
    log = logging.getLogger("auditlock.agent")
    with agent_lock(config.spool.dir):
        agent = agent_class(config, serve_http=not args.once)
        result = agent.run_once() if args.once else agent.run()
    waiting = result.open_segments  # live writers' events: not shippable yet (see agent.open_segments)
    log.info("auditlock agent: stopped", extra={"events_shipped": result.events_shipped,
                                                "segments_left": result.segments_left,
                                                "open_segments": waiting.segments, "open_events": waiting.events,
                                                "open_bytes": waiting.bytes, "open_sealed_by": waiting.sealed_by})
    return 0


def configure_json_logging(level: str) -> None:
    """The agent's own logs: one JSON object per line on stderr (structlog's stdlib bridge)."""
    import structlog  # noqa: PLC0415

    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.JSONRenderer()],
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           structlog.stdlib.ExtraAdder(), structlog.processors.TimeStamper(fmt="iso", utc=True)],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
