"""A Faust app that does nothing but forward: the framework's floor for ``bench/stream_throughput.py``.

One agent on ``resource-metrics`` (raw bytes, like the service's agents) sends every record on to
``PASSTHROUGH_OUT`` without waiting for its acknowledgement, with the service's consumer/producer
settings (at-least-once, acks=all, commit every 500 records or 1 s; Faust flushes the producer before it
commits), the service's Kafka consumer (``pipeline/faust_consumer.py``) and tuning
(``pipeline/faust_tuning.py``: uvloop unless EVENT_LOOP=asyncio, the quiet monitor).
No decoding, no tables, no dedupe. ``GET /count`` tells how many records it forwarded, ``GET /ready``
answers 200 once it has joined its group.

    PASSTHROUGH_APP_ID=... PASSTHROUGH_OUT=... KAFKA_BOOTSTRAP_SERVERS=... WEB_PORT=... DATA_DIR=... \
        .venv/bin/python -m bench.faust_passthrough
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import faust
from faust.web import Request, Response, View

from pipeline.faust_consumer import EagerDeliveryApp
from pipeline.faust_tuning import QuietMonitor, use_event_loop
from pipeline.readiness import is_ready

SOURCE = os.environ.get("PASSTHROUGH_SOURCE", "resource-metrics")
OUT = os.environ["PASSTHROUGH_OUT"]
PORT = int(os.environ["WEB_PORT"])

app = EagerDeliveryApp(
    os.environ["PASSTHROUGH_APP_ID"],
    broker=f"kafka://{os.environ['KAFKA_BOOTSTRAP_SERVERS']}",
    store="memory://",
    datadir=os.environ["DATA_DIR"],
    processing_guarantee="at_least_once",
    topic_partitions=4,
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    broker_commit_every=500,
    broker_commit_interval=timedelta(seconds=1),
    web_enabled=True,
    web_bind="127.0.0.1",
    web_host="127.0.0.1",
    web_port=PORT,
    web_tables_enabled=False,
    web_router_enabled=False,
    web_graph_enabled=False,
    web_stats_enabled=False,
    web_metrics_enabled=False,
    stream_wait_empty=False,
    Monitor=QuietMonitor,
)
source = app.topic(SOURCE, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
out = app.topic(OUT, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
forwarded = 0


@app.agent(source, concurrency=1)
async def passthrough(stream: Any) -> None:
    global forwarded
    async for event in stream.events():
        await out.send(key=event.key, value=event.value)  # buffered; Faust flushes before committing
        forwarded += 1


@app.page("/count")
class CountView(View):
    async def get(self, request: Request) -> Response:
        return self.json({"count": forwarded})


@app.page("/ready")
class ReadyView(View):
    async def get(self, request: Request) -> Response:
        ready, reason = is_ready(app)
        return self.json({"ready": ready, "reason": reason}, status=200 if ready else 503)


if __name__ == "__main__":
    use_event_loop("asyncio" if os.environ.get("EVENT_LOOP") == "asyncio" else "uvloop")
    faust.Worker(app, loglevel="warning").execute_from_commandline()
