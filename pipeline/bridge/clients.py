"""The librdkafka clients' configuration."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError

from pipeline.config import Settings
from pipeline.connections import librdkafka_security

logger = logging.getLogger(__name__)


def kafka_client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """A librdkafka configuration: the brokers, the security settings, and logs and errors through logging
    (librdkafka writes them to stderr otherwise, which would break LOG_FORMAT=json)."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        **librdkafka_security(settings),
        "logger": logging.getLogger("pipeline.bridge.kafka"),
        "error_cb": _log_kafka_error,
        **extra,
    }


def inbound_producer_config(settings: Settings) -> dict[str, Any]:
    """The inbound producer: acks=all and idempotent (no loss, no duplicate from its retries), and murmur2 for
    keyed records, the partitioner of aiokafka (the worker's producer, Faust's tables) and of the Java client:
    librdkafka's default (CRC32) would put a tenant's events on another partition than its table state."""
    return kafka_client_config(settings, **{
        "acks": "all", "enable.idempotence": True, "linger.ms": 2, "partitioner": "murmur2_random",
    })


def _log_kafka_error(error: KafkaError) -> None:
    # Connection errors are retried by librdkafka; a fatal one fails the deliveries, which restarts the direction.
    logger.warning("bridge: Kafka client error: %s", error.str())
