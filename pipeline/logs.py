"""structlog set-up: JSON lines when stderr is not a TTY, readable lines when it is."""

from __future__ import annotations

import logging
import sys

import structlog

from pipeline.config import LoggingConfig


def configure_logging(config: LoggingConfig) -> None:
    """Route structlog to stderr in the configured format and level."""
    use_json = config.format == "json" or (config.format == "auto" and not sys.stderr.isatty())
    renderer = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, config.level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
