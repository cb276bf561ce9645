"""The launcher's own log: `$ANYCLAUDE_HOME/logs/anyclaude.log`, rotating, 0600, secrets masked."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from launcher.config import Config
from launcher.paths import Home
from launcher.redact import redact_text
from launcher.supervision.childlog import PrivateRotatingFileHandler


class RedactingFilter(logging.Filter):
    """Masks known secret values and bearer tokens in every record, at every level."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = redact_text(message, self.secrets)
        record.args = None
        return True


def config_secrets(config: Config) -> list[str]:
    """Every secret value a config holds (the proxy key and each backend's key)."""
    keys = [config.api_key] + [entry.api_key for entry in config.backends.values()]
    return [key.get_secret_value() for key in keys if key is not None]


def setup_logging(home: Home, config: Config, level: int = logging.INFO) -> logging.Handler:
    """Send anyclaude's records (INFO and up) and every library's warnings to the launcher's log.

    The handler sits on the root logger: a library logging with no handler of its own (uvicorn's
    "Invalid HTTP request received.", asyncio's task errors) would otherwise reach Python's last-resort
    handler, which prints on the terminal, over Claude Code's screen. Remove it with `teardown_logging`.
    """
    handler = PrivateRotatingFileHandler(
        home.logs / "anyclaude.log",
        maxBytes=config.log_max_bytes,
        backupCount=config.log_backups,
        encoding="utf-8",
        what="the anyclaude log",
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(config_secrets(config)))
    logging.getLogger("anyclaude").setLevel(level)
    logging.getLogger().addHandler(handler)
    return handler


def teardown_logging(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()
