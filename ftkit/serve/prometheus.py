"""Prometheus metrics of the server, in their own registry (so several apps in one process do not collide).

Per endpoint and served variant: requests by status code and latency; errors by type; the size of every batch the
model ran (requests per forward pass), which is how to see that dynamic batching is working; queue depth.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ftkit_requests",
            "Requests answered, by endpoint, served variant (none before routing) and HTTP status",
            ["endpoint", "variant", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "ftkit_request_errors",
            "Requests answered with an error, by endpoint and error type",
            ["endpoint", "type"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ftkit_request_latency_seconds",
            "Time from request to full response, by endpoint and variant",
            ["endpoint", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "ftkit_batch_size",
            "Requests per model call, by kind (chat, classify, extract) and variant",
            ["kind", "variant"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue = Gauge("ftkit_queue_depth", "Requests waiting for a batch", registry=self.registry)
        self.streams = Gauge("ftkit_active_streams", "Streaming responses in progress", registry=self.registry)

    def observe(self, endpoint: str, variant: str | None, status: int, seconds: float, error: str | None) -> None:
        name = variant or "none"
        self.requests.labels(endpoint, name, str(status)).inc()
        self.latency.labels(endpoint, name).observe(seconds)
        if error is not None:
            self.errors.labels(endpoint, error).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
