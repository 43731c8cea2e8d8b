"""Prometheus metrics without a dependency: a small registry and the app's instruments.

Metrics are per process (each Hypercorn worker or instance keeps its own counters; Prometheus
sums them across scrape targets). `GET /metrics` answers in the text exposition format 0.0.4
to a bearer token equal to CHATAPP_METRICS_TOKEN; without that setting the route answers 404.
"""
from __future__ import annotations

import hmac
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from quart import Quart, current_app, g, request

from .csrf import csrf_exempt

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str, labels: Iterable[str] = ()) -> None:
        self.name, self.help, self.labelnames = name, help, tuple(labels)
        self._lock = threading.Lock()  # Hypercorn may run the app in one thread; tests read from others

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    """A value that only goes up (per label set)."""

    kind = "counter"

    def __init__(self, name: str, help: str, labels: Iterable[str] = (), func: Callable[[], float] | None = None):
        super().__init__(name, help, labels)
        self.values: dict[tuple[str, ...], float] = {}
        self.func = func  # read at scrape time (counts kept elsewhere, e.g. by the cache)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add `amount` to the series named by `labels`."""
        key = self._key(labels)
        with self._lock:
            self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, **labels: str) -> float:
        """The current value of one series (0 when never touched)."""
        if self.func is not None:
            return float(self.func())
        return self.values.get(self._key(labels), 0.0)

    def lines(self) -> list[str]:
        if self.func is not None:
            return [f"{self.name} {_number(self.func())}"]
        with self._lock:
            items = sorted(self.values.items())
        return [f"{self.name}{_labels(self.labelnames, k)} {_number(v)}" for k, v in items]


class Gauge(Counter):
    """A value that goes up and down, or is read from a function at scrape time."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        """Set the series to `value`."""
        key = self._key(labels)
        with self._lock:
            self.values[key] = value

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        """Subtract `amount`."""
        self.inc(-amount, **labels)


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help: str, labels: Iterable[str] = (), buckets: Iterable[float] = LATENCY_BUCKETS):
        super().__init__(name, help, labels)
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self.series: dict[tuple[str, ...], list[float]] = {}  # bucket counts..., sum, count

    def observe(self, value: float, **labels: str) -> None:
        """Record one observation."""
        key = self._key(labels)
        with self._lock:
            series = self.series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    series[i] += 1
            series[-2] += value
            series[-1] += 1

    def count(self, **labels: str) -> float:
        """How many observations one series holds."""
        series = self.series.get(self._key(labels))
        return series[-1] if series else 0.0

    def lines(self) -> list[str]:
        out = []
        with self._lock:
            items = sorted((k, list(v)) for k, v in self.series.items())
        for key, series in items:
            for bound, count in zip(self.buckets, series):
                le = 'le="%s"' % _number(bound)
                out.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {_number(count)}")
            out.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_number(series[-2])}")
            out.append(f"{self.name}_count{_labels(self.labelnames, key)} {_number(series[-1])}")
        return out


class Registry:
    """The metrics of one app, rendered together."""

    def __init__(self) -> None:
        self.metrics: list[_Metric] = []

    def add(self, metric):
        """Register a metric; return it."""
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        """Everything in the Prometheus text exposition format."""
        lines: list[str] = []
        for metric in self.metrics:
            lines += metric.header() + metric.lines()
        return "\n".join(lines) + "\n"


@dataclass
class AppMetrics:
    """The instruments chatapp updates."""

    registry: Registry
    requests: Counter
    request_seconds: Histogram
    first_token_seconds: Histogram
    tokens: Counter
    active_streams: Gauge
    generations: Counter
    reaper_runs: Counter
    reaper_interrupted: Counter


def build(app: Quart) -> AppMetrics:
    """Create the registry and every instrument of one app."""
    registry = Registry()

    def store_count(attribute: str) -> Callable[[], float]:
        return lambda: getattr(getattr(app, "redis", None), attribute, 0)

    metrics = AppMetrics(
        registry=registry,
        requests=registry.add(Counter("chatapp_http_requests_total", "HTTP requests by route template, method and status.",
                                      ("route", "method", "status"))),
        request_seconds=registry.add(Histogram("chatapp_http_request_duration_seconds",
                                               "Time to the response head (streams: until the stream opens).", ("route",))),
        first_token_seconds=registry.add(Histogram("chatapp_time_to_first_token_seconds",
                                                   "From the start of a generation to the model's first text.",
                                                   buckets=FIRST_TOKEN_BUCKETS)),
        tokens=registry.add(Counter("chatapp_tokens_total", "Tokens of finished answers (estimated when the server sent no usage).",
                                    ("kind",))),
        active_streams=registry.add(Gauge("chatapp_active_streams", "Answer streams (SSE) open on this process.")),
        generations=registry.add(Counter("chatapp_generations_total", "Answers generated by this process, by final status.",
                                         ("status",))),
        reaper_runs=registry.add(Counter("chatapp_reaper_runs_total", "Reaper rounds that held the lock.")),
        reaper_interrupted=registry.add(Counter("chatapp_reaper_interrupted_total",
                                                "Orphaned answers (their instance died) marked interrupted by this process.")),
    )
    registry.add(Gauge("chatapp_generations_running", "Answers generating in this process now.",
                       func=lambda: len(app.extensions.get("generations", {}))))
    registry.add(Counter("chatapp_fragment_cache_hits_total", "Rendered message fragments served from Redis.",
                         func=store_count("cache_hits")))
    registry.add(Counter("chatapp_fragment_cache_misses_total", "Fragments rendered because Redis did not have them (or was down).",
                         func=store_count("cache_misses")))
    registry.add(Gauge("chatapp_redis_breaker_open", "1 while the Redis circuit breaker skips Redis.",
                       func=lambda: float(bool(getattr(app, "redis", None) and app.redis.breaker.is_open))))
    return metrics


def of(app: Quart) -> AppMetrics:
    """The app's instruments (created on first use for apps built without init_app)."""
    metrics = app.extensions.get("metrics")
    if metrics is None:
        metrics = app.extensions["metrics"] = build(app)
    return metrics


def _route() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else "(unmatched)"


def record_request(response_status: int) -> None:
    """Count the current request (called once per request, after the response is built)."""
    metrics = of(current_app)
    route = _route()
    method = request.method if request.method in METHODS else "OTHER"
    metrics.requests.inc(route=route, method=method, status=str(response_status))
    started = g.get("request_started")
    if started is not None:
        metrics.request_seconds.observe(time.perf_counter() - started, route=route)


@csrf_exempt  # a bearer-token endpoint for Prometheus: no cookies, so no CSRF
async def metrics_view():
    """Prometheus scrape endpoint (bearer token CHATAPP_METRICS_TOKEN; 404 when unset)."""
    from quart import abort

    token = current_app.config.get("CHATAPP_METRICS_TOKEN")
    if not token:
        abort(404)
    header = request.headers.get("Authorization", "")
    given = header[7:] if header[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        return "unauthorized\n", 401, {"WWW-Authenticate": 'Bearer realm="metrics"', "Content-Type": "text/plain"}
    body = of(current_app).registry.render()
    return body, 200, {"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"}


def init_app(app: Quart) -> None:
    """Create the app's instruments and its /metrics route."""
    of(app)
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
