"""The runtime's event loop, and its signal handlers.

`run` uses uvloop where it is installed (it comes with `uvicorn[standard]`): the proxy's socket work and
loop turns cost less on it (`bench/proxy_overhead.py --loop asyncio` shows the difference on a machine).

Signal handlers go through `add_signal_handler` / `remove_signal_handler` here, which remember each
loop's callbacks, so `swapped_signal` can put back whatever handled a signal before. asyncio offers no
getter for a loop's handlers, and uvloop keeps them where Python cannot see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_Handler = tuple[Callable[..., object], tuple[Any, ...]]
_handlers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, _Handler]] = weakref.WeakKeyDictionary()


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a new loop (uvloop's when available), like `asyncio.run`."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard] on macOS and Linux
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def add_signal_handler(
    loop: asyncio.AbstractEventLoop, signum: int, callback: Callable[..., object], *args: Any
) -> None:
    loop.add_signal_handler(signum, callback, *args)
    _handlers.setdefault(loop, {})[signum] = (callback, args)


def remove_signal_handler(loop: asyncio.AbstractEventLoop, signum: int) -> None:
    loop.remove_signal_handler(signum)
    _handlers.get(loop, {}).pop(signum, None)


@contextlib.contextmanager
def swapped_signal(loop: asyncio.AbstractEventLoop, signum: int, callback: Callable[[], object]) -> Iterator[None]:
    """Route `signum` to `callback` for the duration, then restore the loop's previous handler for it (or
    the previous Python-level handler when the loop had none).

    A plain `signal.signal` is not enough: while the loop handles `signum`, its C handler still wakes the
    loop, which runs its own callback regardless.
    """
    before = _handlers.get(loop, {}).get(signum)
    python_before = signal.getsignal(signum)
    add_signal_handler(loop, signum, callback)
    try:
        yield
    finally:
        if before is not None:
            add_signal_handler(loop, signum, before[0], *before[1])  # replaced directly: never unhandled
        else:
            remove_signal_handler(loop, signum)
            if python_before is not None:
                signal.signal(signum, python_before)
