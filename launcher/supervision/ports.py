"""Who holds a port. Used before spawning a backend and before binding the proxy."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

import psutil

COMMAND_SHOWN = 300  # characters of a holder's command line shown in messages


@dataclass(frozen=True)
class PortHolder:
    pid: int | None
    command: str
    listening: bool = True  # False: the port is the local end of one of the holder's connections

    def describe(self) -> str:
        if self.pid is None:
            return "another process (its pid cannot be read)"
        if not self.listening:
            return f"a connection of pid {self.pid} ({self.command}) as its local port"
        return f"pid {self.pid} ({self.command})"


def port_holder(host: str, port: int) -> PortHolder | None:
    """The process listening on `port`, or None when the port can be bound.

    The bind test is the truth (a listener on another address may not clash); psutil then names
    the holder when the operating system lets us see it.

    Raises:
        OSError: `host` cannot be resolved.
    """
    return None if _can_bind(host, port) else holder_of(port)


def holder_of(port: int) -> PortHolder:
    """Who holds `port`, as far as this user may see (pid None when it may not).

    A listener is named first. Failing that, a connection whose local end is the port: ports in the
    system's ephemeral range can be taken for a while by any process's outgoing connection.
    """
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        connections = []
    on_port = [c for c in connections if c.laddr and c.laddr.port == port and c.pid]
    if not on_port:
        return PortHolder(None, "")
    conn = min(on_port, key=lambda c: c.status != psutil.CONN_LISTEN)
    return PortHolder(conn.pid, _command_of(conn.pid), listening=conn.status == psutil.CONN_LISTEN)


def _can_bind(host: str, port: int) -> bool:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as sock:
        # Without SO_REUSEADDR a port in TIME_WAIT after our own backend exited would look taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _command_of(pid: int) -> str:
    """The holder's command line for messages: keys masked first, so shortening can never cut one in half."""
    from launcher.redact import redact_argv

    try:
        proc = psutil.Process(pid)
        cmdline = proc.cmdline()
        return " ".join(redact_argv(cmdline))[:COMMAND_SHOWN] if cmdline else proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "unknown"


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
