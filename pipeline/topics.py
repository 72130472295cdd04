"""Topic names: the stable contract with the rest of the platform."""

from __future__ import annotations

from pipeline.events.models import INPUT_EVENTS
from pipeline.outputs import AUDIT_EVENTS, PROVISIONING_COMMANDS, PROVISIONING_EVENTS, SCALING_EVENTS

TENANT_CREATED = "tenant-created-events"
TENANT_DELETED = "tenant-deleted-events"
USER_CREATED = "user-created-events"
RESOURCE_ANOMALY = "resource-anomaly-events"
SCALING_REQUEST = "scaling-request-events"
QUOTA_EXCEEDED = "quota-exceeded-events"
RESOURCE_METRICS = "resource-metrics"
COMPUTE_REQUESTS = "compute-request-events"
#: Internal: the REST API's quota changes, keyed by tenant like every input.
QUOTA_UPDATES = "quota-update-requests"
#: Internal: transitions of provisioning commands, from the executor's tasks back into the status table.
PROVISIONING_RESULTS = "provisioning-results"
#: Internal: compute request records, from the worker running a request into the compute-records table. The
#: topic is ``<app id>-compute-records``, declared by its agent like the tables' changelogs (so not listed below),
#: so that another deployment sharing the Kafka cluster never applies this one's records.
COMPUTE_RECORDS = "compute-records"
#: Internal, keyed by tenant: the scaling engine's policy changes from the REST API, timer ticks, outcomes of
#: Deployment reads / scale patches, and fair-share grants (docs/scaling.md).
SCALING_POLICY_REQUESTS = "scaling-policy-requests"
SCALING_TICKS = "scaling-ticks"
SCALING_APPLIED = "scaling-applied"
SCALING_GRANTS = "scaling-grants"
#: Internal, ONE partition, constant key: every workload's demand, for the fair-share pool. Declared by its agent
#: (agents/scaling_demands.py), not listed below: the topics below are grown to TOPIC_PARTITIONS.
SCALING_DEMANDS = "scaling-demands"

#: Platform -> service: bridged from Pulsar into Kafka.
INPUT_TOPICS: tuple[str, ...] = tuple(dict.fromkeys((*INPUT_EVENTS, COMPUTE_REQUESTS)))
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
