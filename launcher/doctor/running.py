"""Doctor checks of what anyclaude runs now, read from the state files, and of who holds a port."""

from __future__ import annotations

from adapters.base import Check, CheckStatus
from adapters.checks import port_check
from launcher.control import Liveness


def running_checks(survey: list[Liveness]) -> list[Check]:
    """One check per state file: READY is fine, DEGRADED and BACKOFF warn, FATAL fails, orphans warn."""
    if not survey:
        return [Check("running", CheckStatus.OK, "no backend is running")]
    return [_running_check(entry) for entry in survey]


def _running_check(entry: Liveness) -> Check:
    record = entry.record
    name = f"running.{record.name}"
    where = f"port {record.port}" if record.port else "no port"
    breaker = str(record.breaker.get("state", "unknown"))
    because = f": {record.reason}" if record.reason else ""
    logs = f"See `anyclaude logs {record.name}`."
    state = entry.state
    if state == "ORPHANED":
        finding = f"backend pid {record.pid} ({where}) outlived the anyclaude that started it"
        return Check(name, CheckStatus.WARN, finding, f"anyclaude stop {record.name}")
    if state == "STALE":
        finding = "a state file is left by an anyclaude that is gone; nothing runs"
        return Check(name, CheckStatus.WARN, finding, f"anyclaude stop {record.name} (removes it)")
    if state == "FATAL":
        fix = f"{logs} Fix the cause, then `anyclaude restart {record.name}`."
        return Check(name, CheckStatus.FAIL, f"FATAL after {record.restarts} restarts{because}", fix)
    if state in ("DEGRADED", "BACKOFF"):
        return Check(name, CheckStatus.WARN, f"{state} on {where}, breaker {breaker}{because}", logs)
    if state == "READY" and breaker == "open":
        return Check(name, CheckStatus.WARN, f"READY on {where} but the breaker is open{because}", logs)
    return Check(name, CheckStatus.OK, f"{state} on {where} (pid {record.pid}), breaker {breaker}")


def own_backend_on(survey: list[Liveness], port: int | None) -> Liveness | None:
    """The backend anyclaude started (its state file proves pid and create time) that uses `port`."""
    if port is None:
        return None
    return next((e for e in survey if e.record.port == port and e.backend), None)


def own_proxy_on(survey: list[Liveness], port: int) -> Liveness | None:
    """The running anyclaude (proved by its state file) whose proxy serves on `port`."""
    return next((e for e in survey if e.record.proxy_port == port and e.launcher), None)


def excuse_own_port(check: Check, port: int | None, survey: list[Liveness]) -> Check:
    """A failed port check turns OK when the holder is our own running backend."""
    own = own_backend_on(survey, port)
    if check.status is not CheckStatus.FAIL or own is None:
        return check
    finding = f"port {port} is used by anyclaude's own backend '{own.record.name}' (pid {own.record.pid}, {own.state})"
    return Check(check.name, CheckStatus.OK, finding)


def proxy_port_check(host: str, port: int, survey: list[Liveness]) -> Check:
    """The proxy's port: free, or served by a running anyclaude."""
    found = port_check(host, port, name="config.proxy-port")
    own = own_proxy_on(survey, port)
    if found.status is CheckStatus.FAIL and own is not None:
        pid = own.record.launcher_pid
        return Check(found.name, CheckStatus.OK, f"port {port} is anyclaude's own proxy (pid {pid})")
    if found.status is CheckStatus.FAIL:
        fix = 'Stop that process, or set "port" (or $ANYCLAUDE_PORT) to a free port.'
        return Check(found.name, found.status, found.finding, fix)
    return found
