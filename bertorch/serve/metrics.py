"""Prometheus metrics of one server: requests, latency, batch sizes, queue time, queue depth.

Each app gets its own registry, so several apps in one process (the tests) do not share counters.
"""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("bertorch_requests", "HTTP requests by path and status code", ["path", "status"],
                                registry=r)
        self.latency = Histogram("bertorch_request_seconds", "Time from request to response, by path", ["path"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.items = Counter("bertorch_items", "Inputs answered (a request may carry many)", ["path"], registry=r)
        self.batch_size = Histogram("bertorch_batch_size", "Inputs per forward pass", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.batch_tokens = Histogram("bertorch_batch_padded_tokens", "Padded tokens per forward pass",
                                      buckets=TOKEN_BUCKETS, registry=r)
        self.queue_time = Histogram("bertorch_queue_seconds", "Time an input waited before its forward pass",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("bertorch_batch_seconds", "Time of one batch: tokenising, forward, decoding",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.queued = Gauge("bertorch_queued_items", "Inputs waiting for a forward pass", registry=r)

    def observe_batch(self, size: int, padded_tokens: int, queue_seconds: list[float], run_seconds: float) -> None:
        """Called by the batcher's worker thread after each batch (prometheus-client is thread-safe)."""
        self.batch_size.observe(size)
        self.batch_tokens.observe(padded_tokens)
        for q in queue_seconds:
            self.queue_time.observe(q)
        self.inference.observe(run_seconds)

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        self.requests.labels(path, str(status)).inc()
        self.latency.labels(path).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
