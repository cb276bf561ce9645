"""The one exception tree of anyclaude.

Every error a person can see carries a message (what went wrong and why) and a hint (what to do).
`cli.py` is the only place that turns these into exit codes; everything else raises.
"""

from __future__ import annotations

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_FATAL = 3


class AnyclaudeError(Exception):
    """Base of all errors anyclaude reports to a person."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class ConfigError(AnyclaudeError):
    """The config file is missing, unreadable, not JSON, or fails validation."""

    exit_code = EXIT_USAGE


class ConfigNotFoundError(ConfigError):
    """No config file anywhere; the built-in default may be used instead."""


class PortInUseError(AnyclaudeError):
    """A port anyclaude needs is held by a process it did not start."""


class BackendStartError(AnyclaudeError):
    """A backend exited or failed its readiness check while starting."""


class BackendFatalError(AnyclaudeError):
    """A backend kept failing and the supervisor gave up on it."""

    exit_code = EXIT_FATAL


class CircuitOpenError(AnyclaudeError):
    """The circuit breaker is open: the backend is failing and is being left alone for a while."""

    def __init__(self, message: str, retry_after: float, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.retry_after = retry_after


class NotRunningError(AnyclaudeError):
    """A command needs a running anyclaude and there is none."""
