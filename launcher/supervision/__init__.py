"""Supervision: one backend process's life (states, start, backoff, stop), its health and circuit breaker.

`supervisor.py` owns the state machine (`states.py`); `procs.py` starts and stops process groups behind
`watchdog.py` (run as its own process: it stops the backend's whole tree, also when the launcher dies),
`childlog.py` writes their output, `statefile.py` proves ownership across launcher runs, `ports.py` names
whoever holds a port; `health.py` probes, `breaker.py` gates the proxy, `gate.py` makes requests wait for a
starting backend and charges each outcome to the backend that served it; `backoff.py` and `clock.py` are
the time they are tested with.
"""
