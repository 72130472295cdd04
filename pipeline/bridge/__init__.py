"""The Pulsar <-> Kafka bridge.

Inbound: platform events on Pulsar topics are produced to Kafka topics of the same name, keyed by tenant
id, with the event's ``occurred_at`` as the record timestamp. A Pulsar message is acknowledged only after
Kafka acknowledged the write, so a bridge that dies in between loses nothing (Pulsar redelivers; the
agents deduplicate by event id).

A message that can never be written to Kafka (larger than the service accepts, or refused by Kafka for what it
is even when produced alone: its size, its timestamp, its content) is replaced by a bounded dead letter on the
dead-letter topic, and acknowledged once that is written: one message never blocks the ones behind it.
Unreadable messages of acceptable size are forwarded as they are and dead-lettered by the agents' decoder, with
the precise reason.

Outbound: the service's output topics are copied from Kafka to Pulsar; Kafka offsets are committed only
after Pulsar acknowledged every message up to them.

Each direction runs in a thread of its own, with the blocking Pulsar client and librdkafka (confluent-kafka):
the per-message work stays off the event loop of the worker it runs in (as a Faust service), or runs alone
with ``python -m pipeline bridge``. A failed direction restarts after a pause (1 s, doubling up to 30 s).
"""

from pipeline.bridge.service import Bridge

__all__ = ["Bridge"]
