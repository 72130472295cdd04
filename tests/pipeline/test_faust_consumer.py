"""The eager message delivery of ``pipeline/faust_consumer.py``, without a broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from faust.types import TP, Message
from mode import Service

from pipeline.faust_consumer import (
    EagerDeliveryApp,
    EagerDeliveryConsumer,
    EagerDeliveryTransport,
    start_delivery,
)

TP0 = TP("source", 0)


@contextmanager
def counting_tasks() -> Iterator[list[Coroutine[Any, Any, Any]]]:
    """Every coroutine wrapped in a task on the running loop while inside the block."""
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    created: list[Coroutine[Any, Any, Any]] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        created.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    try:
        yield created
    finally:
        loop.set_task_factory(previous)


async def test_a_callback_that_does_not_suspend_is_delivered_in_place_without_a_task() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=2)
    lock = asyncio.Lock()

    async def on_message(value: str) -> None:  # what the conductor does when nothing is full
        async with lock:
            pass
        queue.put_nowait(value)

    with counting_tasks() as created:
        assert start_delivery(on_message("a")) is None
        assert queue.get_nowait() == "a"  # delivered before anything was awaited
    assert created == []


async def test_a_callback_blocked_on_a_future_finishes_when_the_future_resolves() -> None:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    seen: list[int] = []

    async def on_message() -> str:
        seen.append(await future)
        await asyncio.sleep(0)  # a bare yield on the way
        return "done"

    rest = start_delivery(on_message())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    assert not task.done()
    future.set_result(7)
    assert await task == "done"
    assert seen == [7]


async def test_a_callback_blocked_on_a_full_queue_puts_once_there_is_room() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(1)

    async def on_message() -> None:
        await queue.put(2)

    rest = start_delivery(on_message())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    assert not task.done()
    assert queue.get_nowait() == 1
    await task
    assert queue.get_nowait() == 2


async def test_an_exception_before_the_first_suspension_propagates_from_start_delivery() -> None:
    async def on_message() -> None:
        raise ValueError("bad message")

    with pytest.raises(ValueError, match="bad message"):
        start_delivery(on_message())


async def test_exceptions_after_a_suspension_reach_the_callback_first_then_the_caller() -> None:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    caught: list[BaseException] = []

    async def on_message() -> None:
        try:
            await future
        except KeyError as exc:  # the future's own exception is raised inside the callback
            caught.append(exc)
            raise RuntimeError("handled and re-raised") from exc

    rest = start_delivery(on_message())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    future.set_exception(KeyError("x"))
    with pytest.raises(RuntimeError, match="handled and re-raised"):
        await task
    assert len(caught) == 1


async def test_cancelling_after_the_awaited_future_resolved_still_cancels_the_callback() -> None:
    # the task cannot cancel a future that is already done: it throws CancelledError in instead, which
    # must reach the callback rather than be swallowed
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    outcome: list[str] = []

    async def on_message() -> None:
        try:
            await future
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        outcome.append("resumed")

    rest = start_delivery(on_message())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    future.set_result(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outcome == ["cancelled"]


async def test_suspend_flow_abandons_a_blocked_delivery_and_the_callback_cleans_up() -> None:
    service = Service()  # wait_first as the consumer uses it
    suspend_flow = asyncio.Event()
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(1)
    cleaned: list[str] = []

    async def on_message() -> None:
        try:
            await queue.put(2)
        finally:
            cleaned.append("finally")

    rest = start_delivery(on_message())
    assert rest is not None
    waiting = asyncio.ensure_future(service.wait_first(rest, suspend_flow.wait()))
    await asyncio.sleep(0)
    assert not waiting.done()
    suspend_flow.set()
    results = await waiting
    assert len(results.done) == 1
    assert results.done[0] is not rest  # suspend_flow won
    for _ in range(3):
        await asyncio.sleep(0)
    assert cleaned == ["finally"]
    assert queue.get_nowait() == 1
    await asyncio.sleep(0)
    assert queue.empty()  # the abandoned put's putter was cancelled: 2 never goes in


# -- the consumer's loop -------------------------------------------------------------------------------


def message(offset: int) -> Message:
    return Message(TP0.topic, TP0.partition, offset, 0.0, 0, None, b"k", str(offset).encode(), None, tp=TP0)


def make_consumer(callback: Callable[[Message], Coroutine[Any, Any, None]]) -> EagerDeliveryConsumer:
    app = EagerDeliveryApp("test-eager-delivery", broker="kafka://127.0.0.1:9", store="memory://")
    consumer = app.transport.create_consumer(
        callback=callback, on_partitions_revoked=lambda revoked: None,
        on_partitions_assigned=lambda assigned: None,
    )
    assert isinstance(consumer, EagerDeliveryConsumer)
    return consumer


def feed(consumer: EagerDeliveryConsumer, fetcher: Service, batches: list[list[Message]],
         monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``getmany`` return ``batches`` one per call, then stop the fetcher."""
    pending = list(batches)

    async def getmany(**_: Any) -> AsyncIterator[tuple[TP, Message]]:  # called with timeout=1.0
        if not pending:
            fetcher._stopped.set()
            return
        for item in pending.pop(0):
            yield item.tp, item

    monkeypatch.setattr(consumer, "getmany", getmany)


def count_calls(consumer: EagerDeliveryConsumer, name: str, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = getattr(consumer, name)

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await original(*args, **kwargs)

    monkeypatch.setattr(consumer, name, wrapper)
    return calls


async def test_the_loop_delivers_in_order_and_only_waits_for_a_callback_that_suspends(
        monkeypatch: pytest.MonkeyPatch) -> None:
    release: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    delivered: list[int] = []

    async def on_message(msg: Message) -> None:
        if msg.offset == 4:
            asyncio.get_running_loop().call_later(0.01, release.set_result, None)
            await release
        delivered.append(msg.offset)

    consumer = make_consumer(on_message)
    fetcher = Service()
    # offset 2 comes again after 4 (older than what was read: dropped)
    feed(consumer, fetcher, [[message(0), message(1), message(2)], [message(3), message(4), message(2)]],
         monkeypatch)
    waits = count_calls(consumer, "wait_first", monkeypatch)
    commits = count_calls(consumer, "commit", monkeypatch)
    assert consumer._commit_every is not None
    consumer._n_acked = consumer._commit_every  # the next message commits first, as in Faust's loop
    await asyncio.wait_for(consumer._drain_messages(fetcher), timeout=5)
    assert delivered == [0, 1, 2, 3, 4]
    assert len(waits) == 1  # only offset 4 needed a task
    assert len(commits) == 1 and consumer._n_acked == 0
    assert consumer._read_offset[TP0] == 4  # also after a delivery that suspended


async def test_the_loop_abandons_a_blocked_delivery_when_flow_is_suspended_and_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(-1)
    cleaned: list[int] = []

    async def on_message(msg: Message) -> None:
        try:
            if msg.offset == 1:
                await queue.put(msg.offset)
        finally:
            cleaned.append(msg.offset)

    consumer = make_consumer(on_message)
    fetcher = Service()
    feed(consumer, fetcher, [[message(0), message(1), message(2)]], monkeypatch)
    asyncio.get_running_loop().call_later(0.01, consumer.suspend_flow.set)
    await asyncio.wait_for(consumer._drain_messages(fetcher), timeout=5)
    await asyncio.sleep(0)
    assert sorted(cleaned) == [0, 1, 2]
    assert consumer._read_offset[TP0] == 2
    assert queue.get_nowait() == -1
    await asyncio.sleep(0)
    assert queue.empty()


async def test_an_exception_of_the_callback_stops_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    async def on_message(msg: Message) -> None:
        if msg.offset == 1:
            raise ValueError("bad message")

    consumer = make_consumer(on_message)
    fetcher = Service()
    feed(consumer, fetcher, [[message(0), message(1), message(2)]], monkeypatch)
    with pytest.raises(ValueError, match="bad message"):
        await asyncio.wait_for(consumer._drain_messages(fetcher), timeout=5)
    assert consumer._read_offset[TP0] == 0


def test_the_worker_app_uses_the_eager_delivery_consumer() -> None:
    from pipeline.app import create_app
    from pipeline.config import Settings

    app = create_app(Settings())

    assert isinstance(app.transport, EagerDeliveryTransport)
    assert app.transport.Consumer is EagerDeliveryConsumer


# -- commits under kill -9 -----------------------------------------------------------------------------------


def acking_consumer(committed: int | None) -> EagerDeliveryConsumer:
    async def on_message(msg: Message) -> None:
        return None

    consumer = make_consumer(on_message)
    consumer.app.topics._acking_topics.add(TP0.topic)
    if committed is not None:
        consumer._committed_offset[TP0] = committed  # as perform_seek leaves it: the next offset to read
    return consumer


async def deliver(consumer: EagerDeliveryConsumer, offsets: list[int], monkeypatch: pytest.MonkeyPatch
                  ) -> list[Message]:
    messages = [message(offset) for offset in offsets]
    fetcher = Service()
    feed(consumer, fetcher, [messages], monkeypatch)
    await asyncio.wait_for(consumer._drain_messages(fetcher), timeout=5)
    return messages


async def test_a_commit_never_passes_the_committed_offset_while_its_message_is_in_flight(
        monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = acking_consumer(committed=100)
    m100, m101, m102 = await deliver(consumer, [100, 101, 102], monkeypatch)
    consumer.ack(m101)  # a duplicate or a dead letter, acknowledged before the event at 100 is done
    consumer.ack(m102)
    assert consumer._new_offset(TP0) is None  # Faust 0.15.3 committed 103 here: 100 was lost on a crash
    consumer.ack(m100)
    assert consumer._new_offset(TP0) == 103


async def test_a_fresh_group_commits_only_from_the_first_offset_it_read(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = acking_consumer(committed=None)
    messages = await deliver(consumer, [0, 1, 2, 3], monkeypatch)
    consumer.ack(messages[2])
    consumer.ack(messages[3])
    assert consumer._new_offset(TP0) is None  # nothing committed yet: Faust committed 4, past 0 and 1
    consumer.ack(messages[0])
    assert consumer._new_offset(TP0) == 1
    consumer._committed_offset[TP0] = 1
    consumer.ack(messages[1])
    assert consumer._new_offset(TP0) == 4


async def test_offsets_that_will_never_come_do_not_hold_commits_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # The committed offset was deleted by retention: the fetcher resumes at 103, and 100..102 never come.
    consumer = acking_consumer(committed=100)
    m103, m104 = await deliver(consumer, [103, 104], monkeypatch)
    consumer.ack(m104)
    assert consumer._new_offset(TP0) == 103  # past the offsets that never come, not past 103 (in flight)
    consumer._committed_offset[TP0] = 103
    consumer.ack(m103)
    assert consumer._new_offset(TP0) == 105


async def test_a_seek_resets_partitions_without_a_committed_offset_to_the_beginning(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka.structs import TopicPartition

    never, zero, some, kept = (TopicPartition("t", p) for p in range(4))
    calls: list[tuple[str, Any]] = []

    class FakeKafkaConsumer:
        async def seek_to_committed(self) -> dict[TopicPartition, int | None]:
            return {never: None, zero: 0, some: 7, kept: 12}

        async def seek_to_beginning(self, *tps: TopicPartition) -> None:
            calls.append(("beginning", tps))

        async def seek_to_end(self, *tps: TopicPartition) -> None:
            calls.append(("end", tps))

        async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
            return dict.fromkeys(tps, 10)  # retention deleted everything before 10

        def seek(self, tp: TopicPartition, offset: int) -> None:
            calls.append(("seek", (tp, offset)))

    consumer = make_consumer(lambda msg: asyncio.sleep(0))  # type: ignore[arg-type,return-value]
    thread = consumer._thread
    thread._consumer = FakeKafkaConsumer()  # type: ignore[assignment]

    async def call_thread(fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        return await fn()

    monkeypatch.setattr(thread, "call_thread", call_thread)
    committed = await thread.seek_to_committed()
    # ``some`` was committed at 7, which retention deleted: commits start where the log now starts.
    assert committed == {never: None, zero: 0, some: 10, kept: 12}
    # aiokafka itself seeks only to offsets > 0: the others keep a position past messages a rebalance dropped.
    assert ("beginning", (never,)) in calls
    assert ("seek", (zero, 0)) in calls
    assert ("seek", (some, 10)) in calls


async def test_a_flush_before_a_commit_waits_for_the_whole_producer_buffer() -> None:
    from types import SimpleNamespace

    from faust.transport.producer import ProducerBuffer

    from pipeline.faust_consumer import drain_fully_on_flush

    buffer = ProducerBuffer()
    buffer.app = EagerDeliveryApp("test-flush", broker="kafka://127.0.0.1:9", store="memory://")
    sent: list[int] = []

    async def send_pending(fut: Any) -> None:
        await asyncio.sleep(0.25)  # longer than the 0.1 s after which Faust's flush gives up
        sent.append(fut.n)

    buffer._send_pending = send_pending  # type: ignore[method-assign]
    drain_fully_on_flush(SimpleNamespace(buffer=buffer))  # type: ignore[arg-type]
    for n in range(3):
        buffer.pending.put_nowait(SimpleNamespace(n=n))  # type: ignore[arg-type]
    await buffer.start()
    try:
        await asyncio.wait_for(buffer.flush(), timeout=10)
        assert sent == [0, 1, 2]
    finally:
        await buffer.stop()


async def test_a_batch_fetched_before_a_seek_is_not_delivered_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # A rebalance in the middle of a batch: its consumer seeks back to the committed offset 8 while messages
    # from the old position (93...) are still being delivered. Faust delivered them: 93.. passed for a gap
    # after 8 (a commit past 8..92) and raised the read offset above 8..92, which were then dropped when
    # fetched again. Lost for good at the next kill.
    delivered: list[int] = []
    consumer: EagerDeliveryConsumer

    async def on_message(msg: Message) -> None:
        delivered.append(msg.offset)
        if msg.offset == 93:
            await consumer.perform_seek()

    consumer = make_consumer(on_message)
    consumer.app.topics._acking_topics.add(TP0.topic)

    async def seek_to_committed() -> dict[TP, int]:
        return {TP0: 8}

    monkeypatch.setattr(consumer, "seek_to_committed", seek_to_committed)
    stale = [message(93), message(94), message(95)]
    again = [message(8), message(9)]
    fetcher = Service()
    feed(consumer, fetcher, [stale, again], monkeypatch)
    await asyncio.wait_for(consumer._drain_messages(fetcher), timeout=5)
    assert delivered == [93, 8, 9]
    for msg in [stale[0], *again]:
        consumer.ack(msg)
    assert consumer._new_offset(TP0) == 10  # 8 and 9 done; 93 waits for 10..92


async def test_messages_handed_out_while_a_seek_runs_are_read_again_after_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The fetcher hands out 40..42 while the recovery's seek to the committed offset 40 is still running
    # (the seek resets the read offsets when it ends). Delivered, the fetcher would go on at 43 and 43 would
    # pass for a gap after 40: a commit past 40..42 before they were handled.
    delivered: list[int] = []
    consumer: EagerDeliveryConsumer

    async def on_message(msg: Message) -> None:
        delivered.append(msg.offset)

    consumer = make_consumer(on_message)
    consumer.app.topics._acking_topics.add(TP0.topic)
    seeks: list[int] = []

    async def seek_to_committed() -> dict[TP, int]:
        seeks.append(40)
        return {TP0: 40}

    monkeypatch.setattr(consumer, "seek_to_committed", seek_to_committed)
    # What the fetcher hands out: 40..42 during the seek, then (its position set back to 40) from 40 again.
    pending = [[message(40), message(41), message(42)], [message(40), message(41), message(42), message(43)]]
    fetcher = Service()

    async def getmany(**_: Any) -> AsyncIterator[tuple[TP, Message]]:
        if not pending:
            fetcher._stopped.set()
            return
        batch = pending.pop(0)
        if batch[0].offset == 40 and not seeks:
            consumer._not_seeking.clear()  # a seek is running while this batch is handed out
            asyncio.get_running_loop().call_later(0.01, consumer._not_seeking.set)
        for item in batch:
            yield item.tp, item

    monkeypatch.setattr(consumer, "getmany", getmany)
    await asyncio.wait_for(consumer._drain_messages(fetcher), timeout=5)
    assert seeks == [40]  # the loop sought back to the committed offset before reading on
    assert delivered == [40, 41, 42, 43]
    consumer.ack(message(43))
    assert consumer._new_offset(TP0) is None  # 40..42 are still in flight: no gap, no commit past them
