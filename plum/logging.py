"""Logging setup, the only place that configures structlog.

Human-readable output on a terminal, one JSON object per line otherwise. Log events are
snake_case past tense with fields as keys: `log.info("task_dispatched", task_id=...)`.
"""

import logging
import sys

import structlog

from plum.config import LogFormat


def setup_logging(level: str = "info", fmt: LogFormat = LogFormat.AUTO, stream=None) -> None:
    stream = stream or sys.stderr
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    use_console = fmt == LogFormat.CONSOLE or (fmt == LogFormat.AUTO and stream.isatty())
    renderer = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that use stdlib logging (aiohttp's access log is off) go to the same stream.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=stream, force=True)


def get_logger(name: str):
    return structlog.get_logger(name)
