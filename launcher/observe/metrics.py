"""Prometheus metrics of the proxy (`GET /metrics`), in the official client's text format.

Request metrics are fed by the request log's writer thread (never on the hot path); backend state,
restarts, breaker and queue depth are read when Prometheus scrapes. The registry is our own, not the
client library's global one, so two proxies in one process (tests) never share counters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from launcher.observe.record import RequestRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Local models answer in tens of milliseconds (a cached turn on a GPU) to minutes (a cold CPU prefill).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Decode speed: a few tokens/s on a CPU to hundreds on a large GPU.
RATE_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)
STATES = ("STOPPED", "STARTING", "READY", "DEGRADED", "BACKOFF", "STOPPING", "FATAL")
BREAKER_STATES = ("closed", "open", "half-open")


@dataclass
class BackendView:
    """What a scrape reports about the backend serving now."""

    name: str
    state: str
    restarts: int = 0
    breaker: str = "closed"
    queue: dict[str, Any] = field(default_factory=dict)


class _BackendCollector(Collector):
    def __init__(self) -> None:
        self.view: BackendView | None = None
        self.dropped = 0

    def collect(self) -> Iterator[Metric]:
        dropped = CounterMetricFamily(
            "anyclaude_request_log_dropped", "Requests the request log could not keep (a full disk or queue)."
        )
        dropped.add_metric([], self.dropped)
        yield dropped
        view = self.view
        if view is None:
            return
        state = GaugeMetricFamily(
            "anyclaude_backend_state", "1 for the state the backend is in.", labels=["backend", "state"]
        )
        for name in STATES:
            state.add_metric([view.name, name], 1.0 if view.state == name else 0.0)
        yield state
        restarts = CounterMetricFamily("anyclaude_backend_restarts", "Restarts of the backend.", labels=["backend"])
        restarts.add_metric([view.name], view.restarts)
        yield restarts
        breaker = GaugeMetricFamily(
            "anyclaude_breaker_state", "1 for the circuit breaker's state.", labels=["backend", "state"]
        )
        for name in BREAKER_STATES:
            breaker.add_metric([view.name, name], 1.0 if view.breaker == name else 0.0)
        yield breaker
        for key, help_text in (
            ("waiting", "Requests waiting in the backend's queue."),
            ("running", "Generations running."),
        ):
            value = view.queue.get(key)
            if isinstance(value, bool | int | float):
                gauge = GaugeMetricFamily(f"anyclaude_backend_queue_{key}", help_text, labels=["backend"])
                gauge.add_metric([view.name], float(value))
                yield gauge


class Metrics:
    """The proxy's registry. `observe` runs on the writer thread; `render` on a scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "anyclaude_requests",
            "Requests through the proxy.",
            ["backend", "endpoint", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "anyclaude_request_errors",
            "Failed requests by error type.",
            ["backend", "error_type"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "anyclaude_request_duration_seconds",
            "Time from request to the answer's last byte.",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "anyclaude_time_to_first_token_seconds",
            "Time from request to the first streamed token.",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.decode = Histogram(
            "anyclaude_decode_tokens_per_second",
            "Output tokens per second after the first token.",
            ["backend"],
            buckets=RATE_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "anyclaude_tokens", "Tokens by kind (input, cached, output).", ["backend", "kind"], registry=self.registry
        )
        self._backend = _BackendCollector()
        self.registry.register(self._backend)

    def observe(self, record: RequestRecord) -> None:
        """Count one finished request."""
        backend = record.backend or "none"
        self.requests.labels(backend, record.endpoint, str(record.status)).inc()
        if record.error_type is not None or record.status >= 400:
            self.errors.labels(backend, record.error_type or "unknown").inc()
        if record.duration is not None:
            self.duration.labels(backend).observe(record.duration)
        if record.ttft is not None:
            self.ttft.labels(backend).observe(record.ttft)
        if record.decode_tps is not None:
            self.decode.labels(backend).observe(record.decode_tps)
        for kind, value in (
            ("input", record.input_tokens),
            ("cached", record.cached_tokens),
            ("output", record.output_tokens),
        ):
            if value:
                self.tokens.labels(backend, kind).inc(value)

    def render(self, view: BackendView | None, dropped: int) -> bytes:
        """The text exposition, with `view` as the backend's current state."""
        self._backend.view, self._backend.dropped = view, dropped
        return generate_latest(self.registry)
