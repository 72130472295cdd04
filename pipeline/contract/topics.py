"""Topic names: the stable contract with the rest of the platform. Nothing else spells a topic name."""

from __future__ import annotations

# -- platform -> service (bridged from Pulsar into Kafka) -------------------------------------------------------
TENANT_CREATED = "tenant-created-events"
TENANT_DELETED = "tenant-deleted-events"
USER_CREATED = "user-created-events"
USER_DELETED = "user-deleted-events"
RESOURCE_ANOMALY = "resource-anomaly-events"
SCALING_REQUEST = "scaling-request-events"
QUOTA_EXCEEDED = "quota-exceeded-events"
RESOURCE_METRICS = "resource-metrics"
COMPUTE_REQUESTS = "compute-request-events"

# -- service -> platform (bridged from Kafka out to Pulsar) -----------------------------------------------------
PROVISIONING_COMMANDS = "provisioning-commands"
PROVISIONING_EVENTS = "provisioning-events"
#: Two kinds of record, told apart by ``kind``: ``scaling-command`` and ``scaling-decision``.
SCALING_EVENTS = "scaling-events"
AUDIT_EVENTS = "audit-events"
#: The default of ``DEAD_LETTER_TOPIC``: inputs that could not be processed, with the reason.
DEAD_LETTER_EVENTS = "dead-letter-events"

# -- internal (Kafka only) ------------------------------------------------------------------------------------
#: The REST API's quota changes, keyed by tenant like every input.
QUOTA_UPDATES = "quota-update-requests"
#: Transitions of provisioning commands, from the executor's tasks back into the status table.
PROVISIONING_RESULTS = "provisioning-results"
#: Compute request records, from the worker running a request into the compute-records table. The topic is
#: ``<app id>-compute-records``, declared by its agent like the tables' changelogs (so not listed below), so that
#: another deployment sharing the Kafka cluster never applies this one's records.
COMPUTE_RECORDS = "compute-records"
#: Keyed by tenant: the scaling engine's policy changes from the REST API, timer ticks, outcomes of Deployment
#: reads / scale patches, and fair-share grants (docs/scaling.md).
SCALING_POLICY_REQUESTS = "scaling-policy-requests"
SCALING_TICKS = "scaling-ticks"
SCALING_APPLIED = "scaling-applied"
SCALING_GRANTS = "scaling-grants"
#: ONE partition, constant key: every workload's demand, for the fair-share pool. Declared by its agent
#: (agents/scaling_demands.py), not listed below: the topics below are grown to TOPIC_PARTITIONS.
SCALING_DEMANDS = "scaling-demands"

#: Platform -> service: bridged from Pulsar into Kafka.
INPUT_TOPICS: tuple[str, ...] = (
    TENANT_CREATED, TENANT_DELETED, USER_CREATED, USER_DELETED, RESOURCE_ANOMALY, SCALING_REQUEST,
    QUOTA_EXCEEDED, RESOURCE_METRICS, COMPUTE_REQUESTS,
)
#: Service -> platform: bridged from Kafka out to Pulsar.
OUTPUT_TOPICS: tuple[str, ...] = (PROVISIONING_COMMANDS, PROVISIONING_EVENTS, SCALING_EVENTS, AUDIT_EVENTS)
#: Kafka only.
INTERNAL_TOPICS: tuple[str, ...] = (
    QUOTA_UPDATES, PROVISIONING_RESULTS,
    SCALING_POLICY_REQUESTS, SCALING_TICKS, SCALING_APPLIED, SCALING_GRANTS,
)


def kafka_topics(dead_letter_topic: str) -> list[str]:
    """Every non-changelog Kafka topic the worker reads or writes (created before it subscribes)."""
    return [*INPUT_TOPICS, *OUTPUT_TOPICS, *INTERNAL_TOPICS, dead_letter_topic]
