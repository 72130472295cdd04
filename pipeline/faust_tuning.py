"""What the worker changes in Faust's defaults to spend less CPU per event (see docs/benchmarks.md)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import faust
import mode.loop
from faust.sensors.monitor import Monitor
from faust.types import TP, AppT, CollectionT, EventT, Message, PendingMessage, ProducerT, RecordMetadata, StreamT
from faust.types.codecs import CodecArg

from pipeline.config import EventLoop


def use_event_loop(name: EventLoop) -> None:
    """Select the asyncio event loop before the worker creates it (uvloop: ~25 % less CPU per event)."""
    if name == "uvloop":
        mode.loop.use("uvloop")


#: Allocations between two collections of the youngest generation (CPython's default: 700). A metrics batch
#: allocates hundreds of thousands of short-lived objects; fewer young collections promote fewer of them
#: to the older generations, whose collections scan every long-lived object.
GC_YOUNG_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """Take what exists before the worker starts (modules, classes, the app, its agents and tables) out of
    the collector's sight, and collect the youngest generation less often.

    The worker lives for days with some 200,000 such objects; without this, each full collection scanned
    them all (about 150 ms on a 2-core VM) a dozen times per 100,000 metrics samples (docs/benchmarks.md).
    Call once, after the imports and before the worker starts.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


class QuietMonitor(Monitor):
    """Faust's default sensor without its per-message, per-event, per-table-access and per-send bookkeeping.

    Those figures feed Faust's own /stats page, which the worker does not serve (it exports its own
    Prometheus metrics); rebalance, assignment and commit figures are kept.
    """

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        return None

    def on_stream_event_in(self, tp: TP, offset: int, stream: StreamT[Any], event: EventT[Any]
                           ) -> dict[str, Any] | None:
        return None

    def on_stream_event_out(self, tp: TP, offset: int, stream: StreamT[Any], event: EventT[Any],
                            state: dict[str, Any] | None = None) -> None:
        return None

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        return None

    def on_table_get(self, table: CollectionT, key: Any) -> None:
        return None

    def on_table_set(self, table: CollectionT, key: Any, value: Any) -> None:
        return None

    def on_send_initiated(self, producer: ProducerT, topic: str, message: PendingMessage, keysize: int,
                          valsize: int) -> Any:
        return None

    def on_send_completed(self, producer: ProducerT, state: Any, metadata: RecordMetadata) -> None:
        return None


class RawBytesSchema(faust.Schema[bytes, bytes]):
    """Keys and values as the bytes Kafka holds (the agents decode them), handed over as they are instead of
    through Faust's serializer registry and its raw codec; sending still goes through the registry."""

    def __init__(self) -> None:
        super().__init__(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    def loads_key(self, app: AppT, message: Message, *, loads: Callable[..., Any] | None = None,
                  serializer: CodecArg | None = None) -> Any:
        return message.key

    def loads_value(self, app: AppT, message: Message, *, loads: Callable[..., Any] | None = None,
                    serializer: CodecArg | None = None) -> Any:
        return message.value
