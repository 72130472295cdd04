"""The bridge's topics: the Pulsar name of a topic, and the Kafka topics created (and grown while empty) with the
service's partition count before anything runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AIOTopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import InvalidPartitionsError, TopicAlreadyExistsError, for_code

from pipeline.config import Settings
from pipeline.connections import aiokafka_security

logger = logging.getLogger(__name__)


def pulsar_topic(settings: Settings, name: str) -> str:
    return f"persistent://{settings.pulsar_namespace}/{name}"


def new_topic(settings: Settings, name: str) -> NewTopic:
    """A topic the service creates: its partition count, replication factor and min in-sync replicas."""
    configs = ({"min.insync.replicas": str(settings.topic_min_insync_replicas)}
               if settings.topic_min_insync_replicas is not None else {})
    return NewTopic(name, num_partitions=settings.topic_partitions,
                    replication_factor=settings.topic_replication_factor, topic_configs=configs)


class PartitionCountMismatch(RuntimeError):
    """Topics whose partition count differs from ``TOPIC_PARTITIONS`` and cannot be changed safely: they
    hold records, or have more partitions (Kafka cannot take partitions away).

    Kafka places a key by its hash modulo the partition count: more partitions would send a tenant's new
    events to another partition than its table state (the changelog partitions), so its worker would no
    longer see its tenant. Growing such topics is refused; docs/operations.md says how to migrate.
    """

    def __init__(self, wanted: int, found: Mapping[str, int], why: str) -> None:
        listed = ", ".join(f"{name} ({count})" for name, count in sorted(found.items()))
        super().__init__(
            f"TOPIC_PARTITIONS={wanted}, but these topics {why} with another partition count: {listed}. "
            "Changing the count would move tenants away from their state; keep TOPIC_PARTITIONS at the existing "
            "count, or migrate to a new APP_ID (docs/operations.md, 'Changing the partition count')."
        )
        self.wanted = wanted
        self.found = dict(found)


async def _holding_records(settings: Settings, partitions: Mapping[str, int]) -> set[str]:
    """Which of these topics ever held a record (an end offset above 0 on some partition)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, **aiokafka_security(settings))
    await consumer.start()
    try:
        ends = await consumer.end_offsets(
            [AIOTopicPartition(name, p) for name, count in partitions.items() for p in range(count)]
        )
    finally:
        await consumer.stop()
    return {tp.topic for tp, end in ends.items() if end > 0}


#: How many times a topic is described before it counts as unsettled, and the pause between two attempts. A topic
#: just created (by this worker or by another one starting at the same moment) is listed before every broker
#: describes it: its entry has an error code (LEADER_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION) or no partitions.
DESCRIBE_ATTEMPTS = 40
DESCRIBE_PAUSE_S = 0.25


class TopicAdministrationFailed(RuntimeError):
    """Kafka refused to create a topic (other than because it exists), or never described it."""


def _creation_errors(response: Any) -> dict[str, str]:
    """The topics of a CreateTopics response that were refused for another reason than already existing.

    aiokafka returns the response as it is, without raising the per-topic errors it holds.
    """
    refused = {}
    for entry in response.topic_errors:
        topic, code = entry[0], entry[1]
        if code in (0, TopicAlreadyExistsError.errno):
            continue
        message = entry[2] if len(entry) > 2 and entry[2] else for_code(code).description
        refused[topic] = f"{for_code(code).message} ({code}): {message}"
    return refused


async def _partition_counts(admin: Any, names: Sequence[str]) -> dict[str, int]:
    """The partition count of each of ``names`` (all existing), describing again those not settled yet.

    Only entries without error and with partitions count: an entry still settling reads as 0 partitions, which
    would look like an empty topic to grow (and Kafka refuses to grow a topic to the count it already has).
    """
    counts: dict[str, int] = {}
    pending = list(names)
    for attempt in range(DESCRIBE_ATTEMPTS):
        if attempt:
            await asyncio.sleep(DESCRIBE_PAUSE_S)
        for entry in await admin.describe_topics(pending):
            if entry["error_code"] == 0 and entry["partitions"] and entry["topic"] in pending:
                counts[entry["topic"]] = len(entry["partitions"])
        pending = [name for name in pending if name not in counts]
        if not pending:
            return counts
    raise TopicAdministrationFailed(
        f"Kafka did not describe these topics after {DESCRIBE_ATTEMPTS} attempts: {', '.join(sorted(pending))}"
    )


async def _grow(admin: Any, wanted: int, short: Mapping[str, int]) -> None:
    """Grow ``short`` to ``wanted`` partitions. Another worker starting at the same moment may have grown them
    first: Kafka then refuses (INVALID_PARTITIONS, "already has N partitions"), which is success when a fresh
    describe shows the wanted count."""
    try:
        await admin.create_partitions({name: NewPartitions(wanted) for name in short})
    except InvalidPartitionsError:
        counts = await _partition_counts(admin, list(short))
        if any(count != wanted for count in counts.values()):
            raise
        logger.info("topics already grown to %d partitions by another worker: %s", wanted, sorted(short))


async def ensure_kafka_topics(settings: Settings, names: Sequence[str]) -> None:
    """Create ``names`` with the service's partition count; grow those with fewer partitions only while
    they never held a record.

    Every per-tenant table is co-partitioned with its source topics, so they must all have the same count
    (Faust refuses to write a table otherwise). Raises :class:`PartitionCountMismatch` for a topic with records
    and another count, :class:`TopicAdministrationFailed` when Kafka refuses to create a topic. Safe to run by
    several workers at once: a topic another one is creating or growing is waited for, not grown twice.
    """
    wanted = settings.topic_partitions
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **aiokafka_security(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            refused = _creation_errors(await admin.create_topics([new_topic(settings, n) for n in missing]))
            if refused:
                listed = "; ".join(f"{name}: {why}" for name, why in sorted(refused.items()))
                raise TopicAdministrationFailed(f"Kafka refused to create these topics: {listed}")
        # Every name exists now (created here or by another worker): describing them cannot auto-create one.
        counts = await _partition_counts(admin, list(dict.fromkeys(names)))
        other = {name: count for name, count in counts.items() if count != wanted}
        used = await _holding_records(settings, other) if other else set()
        if used:
            raise PartitionCountMismatch(wanted, {name: other[name] for name in used}, "already hold records")
        short = {name: count for name, count in other.items() if count < wanted}
        if short:
            logger.warning("growing empty topics to %d partitions: %s", wanted, short)
            await _grow(admin, wanted, short)
        longer = {name: count for name, count in other.items() if count > wanted}
        if longer:
            raise PartitionCountMismatch(wanted, longer, "exist (Kafka cannot remove partitions)")
    finally:
        await admin.close()
