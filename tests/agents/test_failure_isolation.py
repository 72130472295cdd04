"""An agent whose handler raises on one record dead-letters it (reason ``handler-error``), counts it, and
handles the next record: an exception out of an agent would stop the worker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from agents import compute_requests as compute_agent
from agents.runtime import AgentRuntime
from pipeline.contract.topics import COMPUTE_REQUESTS
from pipeline.events.models import UserCreated
from pipeline.metrics import FAILURES
from pipeline.outputs import Emit
from pipeline.worker import Worker


class FakeMessage:
    def __init__(self, value: bytes, key: bytes = b"acme") -> None:
        self.value, self.key, self.acked = value, key, False

    def ack(self) -> bool:
        self.acked = True
        return True


def user_event(event_id: str) -> bytes:
    return json.dumps({"event_id": event_id, "tenant_id": "acme", "occurred_at": "2026-05-01T12:00:00+00:00",
                       "user_id": f"u-{event_id}", "email": "a@example.com"}).encode()


def compute_event(event_id: str, name: str) -> bytes:
    return json.dumps({"event_id": event_id, "tenant_id": "acme", "occurred_at": "2026-05-01T12:00:00+00:00",
                       "request_name": name, "resources": {"vcpus": 1, "memory_gib": 1},
                       "duration_hours": 1}).encode()


def capture_dead_letters(io: AgentRuntime, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    sent: list[tuple[str, str, str]] = []

    async def dead_letter(source_topic: str, raw: bytes | None, key: bytes | None, reason: str, detail: str) -> None:
        sent.append((source_topic, reason, detail))

    monkeypatch.setattr(io, "dead_letter", dead_letter)
    monkeypatch.setattr(io, "send_all", accepted_by_kafka)  # the app is never started: nothing connects
    return sent


async def accepted_by_kafka(emits: Iterable[Emit]) -> list[asyncio.Future[Any]]:
    """Every record acknowledged at once, as a broker would (these tests are about the handler, not sending)."""
    done: list[asyncio.Future[Any]] = []
    for _ in emits:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        done.append(fut)
    return done


async def test_process_dead_letters_an_event_whose_handler_raises_and_handles_the_next(
    io: AgentRuntime, monkeypatch: pytest.MonkeyPatch,
) -> None:
    dead_letters = capture_dead_letters(io, monkeypatch)
    topic = "test-isolation-users"
    handled: list[str] = []

    def handle(event: UserCreated) -> list[Any]:
        if event.event_id == "bad":
            raise ZeroDivisionError("a bug met by one event")
        handled.append(event.event_id)
        return []

    before = FAILURES.labels(topic)._value.get()
    bad, good = FakeMessage(user_event("bad")), FakeMessage(user_event("good"))
    await io.process(bad, topic, UserCreated, handle)  # type: ignore[arg-type]
    await io.process(good, topic, UserCreated, handle)  # type: ignore[arg-type]
    assert handled == ["good"]
    assert dead_letters == [(topic, "handler-error", "ZeroDivisionError: a bug met by one event")]
    assert bad.acked and good.acked  # the bad one does not stall the partition
    assert FAILURES.labels(topic)._value.get() == before + 1


class FakeStream:
    def __init__(self, messages: list[FakeMessage]) -> None:
        self.messages = messages

    async def events(self) -> AsyncIterator[FakeMessage]:
        for message in self.messages:
            yield message


async def test_the_compute_requests_agent_goes_on_after_a_record_that_makes_it_raise(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead_letters = capture_dead_letters(worker.deps.io, monkeypatch)
    submitted: list[str] = []

    class Runtime:
        async def submit_event(self, event: Any) -> None:
            if event.request_name == "explodes":
                raise RuntimeError("offer book corrupted")
            submitted.append(event.request_name)

    monkeypatch.setattr(worker.deps.compute, "runtime", lambda: Runtime())
    monkeypatch.setattr(compute_agent, "require_tenant", lambda stores, tenant_id: None)
    monkeypatch.setattr(worker.deps.io.dedupe, "seen", lambda event_id: False)
    monkeypatch.setattr(worker.deps.io.dedupe, "mark", lambda event_id: None)
    stream = FakeStream([FakeMessage(compute_event("e1", "explodes")), FakeMessage(compute_event("e2", "fine"))])
    agent = worker.app.agents["agents.compute_requests.compute_requests"]
    await agent.fun(stream)  # the agent's own function, as the worker declared it, fed in-process
    assert submitted == ["fine"]
    assert [(t, r) for t, r, _ in dead_letters] == [(COMPUTE_REQUESTS, "handler-error")]


async def test_lines_logged_while_an_event_is_handled_carry_its_tenant_and_event_id(
    io: AgentRuntime, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import logging
    from io import StringIO

    from pipeline.logs import JsonLineFormatter

    capture_dead_letters(io, monkeypatch)
    stream = StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())  # formats when the line is logged, as the worker's handler does
    log = logging.getLogger("tests.agents.context")
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    def handle(event: UserCreated) -> list[Any]:
        log.info("handling %s", event.event_id)
        return []

    try:
        await io.process(FakeMessage(user_event("ctx-1")), "test-context-users", UserCreated,  # type: ignore[arg-type]
                         handle)
        log.info("between events")
    finally:
        log.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (inside["message"], inside["tenant_id"], inside["event_id"]) == ("handling ctx-1", "acme", "ctx-1")
    assert "tenant_id" not in outside and "event_id" not in outside
