"""Before a backend is spawned: the adapter's own checks (the ones `doctor` runs) that no restart can fix.

A model path that does not exist, or a distributed mode the model cannot run, fails every start the same
way: retrying it through the whole backoff only prints the same error six times and ends with a hint
to `anyclaude restart` what cannot start. Such checks carry the entry key to edit (`Check.key`); one of
them failing stops the start with a single error naming the path, the key and the file (exit 2).
"""

from __future__ import annotations

import logging

from adapters.base import AdapterError, CheckStatus, adapter_for
from launcher.config import Settings
from launcher.errors import ConfigError

log = logging.getLogger("anyclaude.preflight")


def preflight(settings: Settings) -> None:
    """Run the active backend's blocking checks.

    Raises:
        ConfigError: one of them failed (the message names the entry key and the config file).
    """
    import adapters  # noqa: F401  (fills the adapter registry)

    name, entry = settings.mode, settings.entry
    try:
        adapter = adapter_for(name, entry)
        found = adapter.checks(name, entry, settings.config)
    except AdapterError:
        return  # the launch spec reports a bad entry with its own message
    except Exception as exc:  # a check that crashes must not keep a backend from starting
        log.warning("the %s checks failed to run (%s: %s); starting without them", name, type(exc).__name__, exc)
        return
    for check in found:
        if check.status is CheckStatus.FAIL and check.key:
            field = check.key if check.key.startswith("backends.") else f"backends.{name}.{check.key}"
            where = f"{settings.path}: " if settings.path else ""
            in_file = f" in {settings.path}" if settings.path else ""
            hint = f"{check.fix} Edit {field}{in_file}." if check.fix else f"Edit {field}{in_file}."
            raise ConfigError(f"{where}{field}: {check.finding}", hint=hint)
