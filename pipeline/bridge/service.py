"""The bridge as a service: each direction in a thread of its own, restarted after a failure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence

import pulsar
from confluent_kafka import Producer

from pipeline.bridge.clients import inbound_producer_config
from pipeline.bridge.inbound import FLUSH_TIMEOUT_S, InboundForwarder, forward_until_stopped
from pipeline.bridge.outbound import copy_to_pulsar
from pipeline.bridge.topics import ensure_kafka_topics, pulsar_topic
from pipeline.config import Settings
from pipeline.connections import pulsar_client_options
from pipeline.contract.topics import INPUT_TOPICS, OUTPUT_TOPICS

logger = logging.getLogger(__name__)

#: Pulsar messages the inbound consumer receives ahead of the forwarding (its receiver queue).
MAX_IN_FLIGHT = 2000


class Bridge:
    """Both directions, each in a thread of its own off the event loop (the sync Pulsar client and librdkafka
    do their per-message work without the loop); ``start``/``stop``/``run_forever`` are coroutines for the
    worker's Faust service and ``python -m pipeline bridge``."""

    def __init__(
        self,
        settings: Settings,
        inbound: Sequence[str] = INPUT_TOPICS,
        outbound: Sequence[str] = OUTPUT_TOPICS,
    ) -> None:
        self.settings = settings
        self.inbound = list(inbound)
        self.outbound = list(outbound)
        self._threads: list[threading.Thread] = []
        self._pulsar: pulsar.Client | None = None
        self._stopping = threading.Event()
        self._stopped: asyncio.Event | None = None

    async def start(self) -> None:
        dead_letters = [self.settings.dead_letter_topic] if self.inbound else []
        await ensure_kafka_topics(self.settings, [*self.inbound, *self.outbound, *dead_letters])
        self._stopping.clear()
        self._stopped = asyncio.Event()
        self._pulsar = pulsar.Client(
            self.settings.pulsar_url, operation_timeout_seconds=30, logger=logging.getLogger("pulsar.client"),
            **pulsar_client_options(self.settings),
        )
        runs = [(self._run_inbound, "bridge-inbound")] if self.inbound else []
        runs += [(self._run_outbound, "bridge-outbound")] if self.outbound else []
        for run, name in runs:
            thread = threading.Thread(target=self._supervise, args=(run,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _supervise(self, run: Callable[[], None]) -> None:
        """Run one direction until stopped, restarting it after a failure (a broker restart, a rebalance
        that invalidated a commit...). Nothing is lost: unacknowledged input is delivered again."""
        delay = 1.0
        while not self._stopping.is_set():
            try:
                run()
            except Exception:
                logger.exception("bridge %s failed; restarting in %.0fs", run.__name__, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, 30.0)
            else:
                delay = 1.0

    async def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            # Bounded: a receive or consume wakes up within a second, a flush waits FLUSH_TIMEOUT_S at most.
            await asyncio.to_thread(thread.join, FLUSH_TIMEOUT_S + 30)
            if thread.is_alive():
                logger.warning("bridge: %s did not stop in time", thread.name)
        self._threads.clear()
        if self._pulsar is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._pulsar.close)
            self._pulsar = None
        if self._stopped is not None:
            self._stopped.set()

    async def run_forever(self) -> None:
        await self.start()
        assert self._stopped is not None
        try:
            await self._stopped.wait()
        finally:
            await self.stop()

    # -- Pulsar -> Kafka ------------------------------------------------------------------------------

    def _run_inbound(self) -> None:
        assert self._pulsar is not None
        consumer = self._pulsar.subscribe(
            [pulsar_topic(self.settings, t) for t in self.inbound],
            subscription_name=self.settings.bridge_subscription,
            # Failover: one active bridge per topic (per-key order kept), the others take over when it dies
            # and receive everything it had not acknowledged. Key_Shared can leave redelivered messages of a
            # dead consumer blocked behind a "recently joined" consumer's read position.
            consumer_type=pulsar.ConsumerType.Failover,
            initial_position=pulsar.InitialPosition.Earliest,
            negative_ack_redelivery_delay_ms=1000,
            receiver_queue_size=MAX_IN_FLIGHT,
        )
        try:
            producer = Producer(inbound_producer_config(self.settings))
            forwarder = InboundForwarder(consumer, producer, self.settings.dead_letter_topic)
            try:
                forward_until_stopped(consumer, forwarder, self._stopping)
            finally:
                forwarder.close()
        finally:
            with contextlib.suppress(Exception):
                consumer.close()

    # -- Kafka -> Pulsar ------------------------------------------------------------------------------

    def _run_outbound(self) -> None:
        assert self._pulsar is not None
        copy_to_pulsar(self.settings, self._pulsar, self.outbound, self._stopping)
