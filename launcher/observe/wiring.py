"""Observability for one running stack: the recorder, the metrics and the dashboard, built and stopped together."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

from launcher.observe.metrics import Metrics
from launcher.observe.recorder import LogSettings, Recorder
from launcher.observe.store import log_path
from launcher.observe.web import Dashboard

if TYPE_CHECKING:
    from launcher.observe.views import StackView


class Observability:
    """What the stack adds to its proxy: an observer for the handlers and the `/metrics` and `/ui` routes.

    Settings are read from `stack.settings` each time, so a config edit applies without a restart.
    """

    def __init__(self, stack: StackView) -> None:
        def settings() -> LogSettings:
            config = stack.settings.config
            return LogSettings(config.request_log, config.request_log_max_days, config.request_log_max_bytes)

        self.metrics = Metrics()
        self.recorder = Recorder(
            log_path(stack.settings.home),
            settings,
            keep_bodies=lambda: stack.settings.config.log_bodies,
            sinks=(self.metrics.observe,),
        )
        self.dashboard = Dashboard(stack, self.recorder, self.metrics)

    def routes(self) -> list[BaseRoute]:
        return self.dashboard.routes()

    def start(self) -> None:
        self.recorder.start()

    def stopping(self) -> None:
        """The proxy is about to stop: end the dashboard's event streams so they do not hold it up."""
        self.dashboard.closing()

    async def close(self) -> None:
        """Write the records still queued, then stop the writer."""
        await asyncio.to_thread(self.recorder.close)
