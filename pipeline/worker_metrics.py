"""Metrics read from the running worker at scrape time: readiness and consumer lag per input topic.

They are computed when Prometheus scrapes rather than kept up to date by a timer: the answer is always
current, and a worker that is busy recovering costs nothing until someone asks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

logger = logging.getLogger(__name__)

READY = "provisioning_ready"
CONSUMER_LAG = "provisioning_consumer_lag_messages"


class WorkerCollector(Collector):
    """``provisioning_ready`` (1 when ``/ready`` would answer 200) and ``provisioning_consumer_lag_messages``
    (messages not yet committed, by topic, over this worker's partitions)."""

    def __init__(self, readiness: Callable[[], tuple[bool, str]], lag: Callable[[], Mapping[str, int]]) -> None:
        self._readiness = readiness
        self._lag = lag

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(READY, "1 when the worker may serve (/ready answers 200), else 0.")
        yield GaugeMetricFamily(CONSUMER_LAG, "Messages after the committed offset, by input topic.",
                                labels=["topic"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ready = GaugeMetricFamily(READY, "1 when the worker may serve (/ready answers 200), else 0.")
        try:
            ok = self._readiness()[0]
        except Exception:  # a failing check is "not ready", as /ready answers
            logger.debug("the readiness check failed during a scrape", exc_info=True)
            ok = False
        ready.add_metric([], 1.0 if ok else 0.0)
        yield ready
        lag = GaugeMetricFamily(CONSUMER_LAG, "Messages after the committed offset, by input topic.",
                                labels=["topic"])
        try:
            by_topic = dict(self._lag())
        except Exception:  # a rebalance can revoke partitions while they are read: report none this time
            logger.debug("consumer lag unavailable during a scrape", exc_info=True)
            by_topic = {}
        for topic, messages in sorted(by_topic.items()):
            lag.add_metric([topic], float(messages))
        yield lag


_registered: dict[int, WorkerCollector] = {}


def register(collector: WorkerCollector, registry: CollectorRegistry = REGISTRY) -> None:
    """Register ``collector``, replacing one registered earlier in this process on the same registry."""
    previous = _registered.pop(id(registry), None)
    if previous is not None:
        registry.unregister(previous)
    registry.register(collector)
    _registered[id(registry)] = collector
