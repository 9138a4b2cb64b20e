"""Prometheus metrics and the middleware that measures every request."""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """Prometheus metrics in the app's own registry (no process globals).

    With several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set by ``userlens serve
    --workers N``) every worker writes its values to that folder and ``/metrics`` adds them
    up, whichever worker answers the scrape.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.requests = Counter("userlens_requests", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram(
            "userlens_request_seconds", "request latency", ["method", "route"],
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10),
            registry=self.registry)
        self.events = Counter("userlens_events", "events by outcome", ["outcome"],
                              registry=self.registry)
        self.fallbacks = Counter("userlens_fallback_recommendations",
                                 "recommendation lists served entirely by the fallback",
                                 registry=self.registry)
        self.summaries = Counter("userlens_llm_summaries",
                                 "LLM profile summaries by outcome (accepted, rejected: "
                                 "unfaithful, replaced by the template; failed: no reply)",
                                 ["outcome"], registry=self.registry)
        self.model = Gauge("userlens_model_info", "served model (value 1)",
                           ["name", "version"], registry=self.registry,
                           multiprocess_mode="liveall")

    def exposition(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return generate_latest(merged)

    def set_model(self, name: str, version: str) -> None:
        self.model.clear()
        self.model.labels(name, version).set(1)


class Measure:
    """ASGI middleware: count requests and observe latency per route template."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def capture(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = route.path if route is not None else "unmatched"
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            self.metrics.latency.labels(scope["method"], template).observe(
                time.perf_counter() - started)
