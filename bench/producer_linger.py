"""CPU per record of the worker's Kafka producer with and without linger (``KAFKA_PRODUCER_LINGER_MS``).

On a Kafka broker of its own (``bench/stream_support.event_plane``), one aiokafka producer (``acks=all``, as
the worker's) sends the worker's mixed pattern for ``--seconds``: about 1,000 single records a second (the
metrics side: table changelogs, bridge copies) and, 20 times a second, a burst of 20 larger records (one
tenant-created event's commands, status events and changelogs). Runs alternate between the linger values
(``--linger 0 5``), ``--runs`` each, in one process; each run reports the process CPU time it took per record
(``time.process_time``: CPU, not wall time, so a busy machine disturbs it less than a latency). Prints JSON.

    .venv/bin/python -m bench.producer_linger [--linger 0 5] [--runs 3] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.stream_support import emit, event_plane, machine

SINGLE = b"m" * 300
BURST = b"c" * 600


async def one_run(bootstrap: str, linger_ms: int, seconds: float) -> dict[str, Any]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms)
    await producer.start()
    topic = f"linger-{uuid.uuid4().hex[:8]}"
    try:
        await producer.send_and_wait(topic, b"warm-up", key=b"k")
        sent: list[asyncio.Future[Any]] = []
        records = 0
        cpu_start, started = time.process_time(), time.monotonic()
        while time.monotonic() - started < seconds:
            tick = time.monotonic()
            for slot in range(50):  # 50 slots of 1 ms: one single record each, a burst every 10th
                sent.append(await producer.send(topic, SINGLE, key=str(records % 64).encode()))
                records += 1
                if slot % 10 == 0:
                    for _ in range(20):
                        sent.append(await producer.send(topic, BURST, key=str(records % 64).encode()))
                        records += 1
                await asyncio.sleep(0.001)
            await asyncio.sleep(max(0.0, 0.05 - (time.monotonic() - tick)))
        await asyncio.gather(*sent)
        cpu = time.process_time() - cpu_start
    finally:
        await producer.stop()
    return {"linger_ms": linger_ms, "records": records, "cpu_s": round(cpu, 3),
            "cpu_us_per_record": round(cpu / records * 1e6, 1)}


async def compare(bootstrap: str, lingers: list[int], runs: int, seconds: float) -> dict[str, Any]:
    results = [await one_run(bootstrap, linger, seconds) for _ in range(runs) for linger in lingers]
    medians = {
        str(linger): statistics.median(r["cpu_us_per_record"] for r in results if r["linger_ms"] == linger)
        for linger in lingers
    }
    return {"runs": results, "median_cpu_us_per_record": medians}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--linger", type=int, nargs="+", default=[0, 5], help="linger values in ms, alternated")
    parser.add_argument("--runs", type=int, default=3, help="runs of each linger value")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of one run")
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "producer_linger", "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="producer-linger-") as workdir, event_plane(Path(workdir)) as env:
        result.update(asyncio.run(compare(env["KAFKA_BOOTSTRAP_SERVERS"], args.linger, args.runs, args.seconds)))
    emit(result)


if __name__ == "__main__":
    main()
