"""Shared pieces of the stream benchmarks (``bench/stream_throughput.py``, ``stream_latency.py``,
``bridge_throughput.py``): an isolated event plane, real events built from real data, a worker process,
Kafka offsets, the machine.

Not a benchmark itself. Every benchmark runs on an event plane of its own (``event_plane``): a Kafka broker
started for the run (the local stack's Kafka service: same jars and settings, other ports, fresh data
directory) and a Pulsar namespace of its own on the stack's Pulsar (``python -m devstack up
pulsar``). The shared broker keeps every record earlier runs wrote, and a worker with a fresh APP_ID reads
its topics from the beginning: a benchmark writing tens of thousands of records there would slow every
later test's worker down (and the records of other runs would disturb the measurement).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import csv
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client.parser import text_string_to_metric_families

from devstack.harness.worker import free_port

ROOT = Path(__file__).resolve().parents[1]
NAB_CLOUDWATCH = ROOT.parent / "shared" / "data" / "nab" / "data" / "realAWSCloudwatch"
JWT_SECRET = "bench-secret-of-at-least-32-bytes-000"  # noqa: S105 - a local development worker
PEER_SECRET = "bench-peer-secret-of-at-least-32-bytes"  # noqa: S105 - the workers of one local run
SNAPSHOT_SIGNING_KEY = "bench-snapshot-signing-key-0000"
#: Cores every workload is sized at: NAB's CPU-utilisation percentages become ``cpu_cores`` of this.
WORKLOAD_CORES = 8.0
WORKLOAD_MEMORY_GIB = 16.0
SAMPLE_INTERVAL = timedelta(seconds=10)


# -- environment and machine ---------------------------------------------------------------------------


@contextlib.contextmanager
def event_plane(workdir: Path) -> Iterator[dict[str, str]]:
    """A Kafka broker and a Pulsar namespace for this run only; yields the worker's environment for them
    (KAFKA_BOOTSTRAP_SERVERS, PULSAR_URL, PULSAR_ADMIN_URL, PULSAR_NAMESPACE). Starts the stack's Pulsar
    if it is not running."""
    from devstack import stack
    from devstack.harness.tenant_provisioning import EventPlane
    from pipeline.config import get_settings

    ctx = stack.context(get_settings())
    stack.up(ctx, ["pulsar"])
    plane = EventPlane.start(ctx.cache_dir, workdir / "plane", stack.load("pulsar").exports(ctx))
    try:
        yield plane.env()
    finally:
        plane.stop()


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": loadavg(),
    }


def run_id() -> str:
    return secrets.token_hex(3)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- events from real data -----------------------------------------------------------------------------


def nab_cpu_series() -> dict[str, list[float]]:
    """NAB's real AWS CloudWatch CPU-utilisation series (percent, 5-min steps), by workload name."""
    series: dict[str, list[float]] = {}
    for path in sorted(NAB_CLOUDWATCH.glob("*cpu_utilization*.csv")):
        with path.open() as handle:
            series[path.stem.replace("_", "-")] = [float(row["value"]) for row in csv.DictReader(handle)]
    if not series:
        raise SystemExit(f"no NAB CPU series under {NAB_CLOUDWATCH}")
    return series


def tenant_ids(run: str, count: int) -> list[str]:
    return [f"bench-{run}-t{i}" for i in range(count)]


def tenant_created(tenant_id: str, event_id: str, tier: str = "standard") -> dict[str, Any]:
    return {
        "event_id": event_id, "tenant_id": tenant_id, "occurred_at": datetime.now(UTC).isoformat(),
        "name": f"Benchmark tenant {tenant_id}", "tier": tier, "owner_user_id": "bench",
    }


def metric_events(run: str, tenants: Sequence[str], count: int) -> Iterator[tuple[str, bytes]]:
    """``count`` resource-metrics events (key, JSON bytes) round-robin over tenants and NAB workloads.

    Tenant ``i`` replays every NAB CPU series as one workload, starting at a different offset; the
    ``cpu_cores`` of a sample is the series' percentage of an 8-core workload; memory and GPUs are fixed.
    Every workload reports every ``SAMPLE_INTERVAL`` (a Prometheus scrape interval), the last samples now.
    """
    series = nab_cpu_series()
    names = sorted(series)
    steps = -(-count // (len(tenants) * len(names)))
    first = datetime.now(UTC) - SAMPLE_INTERVAL * steps
    for n in range(count):
        tenant_index = n % len(tenants)
        workload = names[(n // len(tenants)) % len(names)]
        values = series[workload]
        step = n // (len(tenants) * len(names))
        value = values[(step + 97 * tenant_index) % len(values)]
        tenant = tenants[tenant_index]
        at = (first + SAMPLE_INTERVAL * step).isoformat()
        event = {
            "event_id": f"{run}-m{n}", "tenant_id": tenant, "occurred_at": at, "workload": workload,
            "cpu_cores": round(value / 100 * WORKLOAD_CORES, 4), "memory_gib": WORKLOAD_MEMORY_GIB,
            "gpus": 0, "requests_per_s": None, "replicas": 2,
        }
        yield tenant, json.dumps(event).encode()


# -- Kafka offsets -------------------------------------------------------------------------------------


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or set())
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = sorted(consumer.partitions_for_topic(topic) or set())
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def commit_offsets(bootstrap: str, group: str, topics: Sequence[str],
                         offsets: dict[int, int] | None) -> None:
    """Commit ``offsets`` (partition -> offset, the same for every topic) or else the current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or set())]
        consumer.assign(tps)
        wanted = await consumer.end_offsets(tps) if offsets is None else {tp: offsets[tp.partition] for tp in tps}
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in wanted.items()})
    finally:
        await consumer.stop()


# -- a worker process ----------------------------------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text endpoint, by (sample name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - a local worker
        text = response.read().decode()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def counter(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


@dataclass
class Worker:
    """``python -m pipeline worker`` (or another Faust app) on 127.0.0.1:``port`` with its own data dir and log."""

    env: dict[str, str]
    workdir: Path
    port: int = field(default_factory=free_port)
    #: Interpreter arguments before ``-m pipeline worker``, e.g. ``["-m", "cProfile", "-o", "out.prof"]``.
    python_args: list[str] = field(default_factory=list)
    #: What to run: the service's worker, or another Faust app (``["-m", "bench.faust_passthrough"]``).
    command: list[str] = field(default_factory=lambda: ["-m", "pipeline", "worker"])
    #: The checkout to run it from (another copy of the tree, to compare a change in the same conditions).
    cwd: Path = ROOT
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "worker.log"

    def start(self) -> Worker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {"PEER_SECRET": PEER_SECRET, **os.environ, **self.env, "WEB_PORT": str(self.port),
               "DATA_DIR": str(self.workdir / "data")}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, *self.python_args, *self.command], cwd=self.cwd, env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        atexit.register(self.stop)  # also when the benchmark is interrupted (see ``stop_on_sigterm``)
        return self

    def wait_ready(self, timeout: float = 180) -> float:
        """Seconds until /ready answered 200."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise SystemExit(f"worker exited with {self.proc.returncode}; log: {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/ready", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise SystemExit(f"worker not ready after {timeout:.0f} s; log: {self.log_path}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return scrape(f"{self.url}/metrics")

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the worker and of its child processes (the forecaster), all
        threads."""
        assert self.proc is not None
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)


def worker_env(stack: dict[str, str], app_id: str, bridge: bool, **extra: str) -> dict[str, str]:
    return {
        **stack,
        "APP_ID": app_id,
        "JWT_SECRET": JWT_SECRET,
        "SNAPSHOT_SIGNING_KEY": SNAPSHOT_SIGNING_KEY,
        "BRIDGE_ENABLED": "true" if bridge else "false",
        "EXECUTOR_ENABLED": "false",
        "STORE": "rocksdb://",
        **extra,
    }


def stop_on_sigterm() -> None:
    """Turn SIGTERM (``timeout``, ``kill``) into SystemExit, so the workers we started are stopped too."""

    def handler(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def emit(result: dict[str, Any]) -> None:
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


# -- the command line ----------------------------------------------------------------------------------


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the benchmarks that start a worker: profile it, run another checkout, extra settings."""
    parser.add_argument("--profile", type=lambda p: Path(p).resolve(),
                        help="run the measured worker under cProfile, writing this file (figures not comparable)")
    parser.add_argument("--worker-root", type=lambda p: Path(p).resolve(), default=ROOT,
                        help="run the worker from this checkout (to measure a change side by side)")
    parser.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment of the worker, e.g. SCALING_ENABLED=false (repeatable)")


def extra_worker_env(args: argparse.Namespace) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in args.worker_env)


Run = Callable[[argparse.Namespace, dict[str, str], Path], Awaitable[dict[str, Any]]]


def run_on_event_plane(args: argparse.Namespace, run: Run, module: str, keep: bool = False,
                       output: Callable[[dict[str, Any]], str] | None = None, json_output: bool = True) -> None:
    """Run ``run(args, stack env, workdir)`` on an event plane of its own and print its result as JSON
    (if ``json_output``), then as ``output(result)`` (a table) if given."""
    stop_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix=f"{module.replace('_', '-')}-"))
    try:
        with event_plane(workdir) as stack:
            result = asyncio.run(run(args, stack, workdir))
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result["command"] = f"python -m bench.{module} " + " ".join(sys.argv[1:])
    if json_output:
        emit(result)
    if output is not None:
        sys.stdout.write(output(result) + "\n")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of ``pid`` and of every process it started (all threads)."""
    return sum(process_cpu_seconds(process) for process in [pid, *descendants(pid)])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """The processes started by ``pid``, their children, and so on (Linux /proc)."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            for child in children.read_text().split():
                found += [int(child), *descendants(int(child))]
        except FileNotFoundError:
            continue
    return found
