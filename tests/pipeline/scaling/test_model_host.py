import multiprocessing
import os
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.scaling.forecast import ForecasterConfig
from pipeline.scaling.model_host import LearnRequest, ModelHost, ModelHostLost, ProcessModelHost, Restore

CONFIG = ForecasterConfig(interval_minutes=30.0, horizon=6)
T0 = datetime(2024, 1, 1, tzinfo=UTC)
AFTER = T0 + timedelta(hours=6, minutes=30)  # the window after the first 12
NEW = Restore(snapshot=None, snapshot_window_end=None, recent=(), observations=0)


def requests(first: int, count: int) -> list[LearnRequest]:
    """Windows ``first`` .. ``first + count - 1`` of a daily-ish load; the very first one creates the model."""
    return [
        LearnRequest(key="acme/api", value=2.0 + (i % 48) / 10, end=T0 + timedelta(minutes=30 * (i + 1)),
                     quantiles=(0.1, 0.9), restore=NEW if i == 0 else None)
        for i in range(first, first + count)
    ]


@pytest.fixture
async def process_host() -> AsyncIterator[ProcessModelHost]:
    host = ProcessModelHost(CONFIG, snapshot_every=10)
    await host.start()
    yield host
    host.close()


async def test_the_child_process_forecasts_exactly_as_the_engine_process_would(
    process_host: ProcessModelHost,
) -> None:
    inline = ModelHost(CONFIG, snapshot_every=10).learn(requests(0, 25))
    in_child = await process_host.learn(requests(0, 25))
    assert [r.forecast for r in in_child] == [r.forecast for r in inline]
    assert [r.observations for r in in_child] == list(range(1, 26))
    assert [r.observations for r in in_child if r.snapshot is not None] == [10, 20]
    assert in_child[0].restored_from == "new" and all(r.restored_from is None for r in in_child[1:])
    assert all(r.seconds > 0 for r in in_child)


async def test_submissions_run_while_the_caller_goes_on_and_keep_their_order(
    process_host: ProcessModelHost,
) -> None:
    inline = ModelHost(CONFIG, snapshot_every=10).learn(requests(0, 30))
    first, second, third = (process_host.submit(requests(i, 10)) for i in (0, 10, 20))
    in_child = [*await first, *await second, *await third]
    assert [r.forecast for r in in_child] == [r.forecast for r in inline]
    assert [r.observations for r in in_child] == list(range(1, 31))


async def test_every_submission_in_flight_when_the_child_dies_reports_it(process_host: ProcessModelHost) -> None:
    await process_host.learn(requests(0, 1))
    for child in multiprocessing.active_children():
        os.kill(child.pid or 0, signal.SIGKILL)
    pending = [process_host.submit(requests(i, 1)) for i in (1, 2)]
    for submission in pending:
        with pytest.raises(ModelHostLost):
            await submission
    [fresh] = await process_host.learn(requests(0, 1))
    assert fresh.restored_from == "new" and fresh.observations == 1


async def test_a_lost_child_is_reported_and_the_next_one_restores_from_the_snapshot(
    process_host: ProcessModelHost,
) -> None:
    learned = await process_host.learn(requests(0, 12))
    for child in multiprocessing.active_children():
        os.kill(child.pid or 0, signal.SIGKILL)
    with pytest.raises(ModelHostLost):
        await process_host.learn(requests(12, 1))
    snapshot = learned[9].snapshot
    assert snapshot is not None
    recent = tuple((r.end, r.value) for r in requests(0, 12)[-4:])
    restore = Restore(snapshot=snapshot, snapshot_window_end=requests(0, 12)[9].end, recent=recent, observations=12)
    [resumed] = await process_host.learn([LearnRequest(key="acme/api", value=3.0, end=AFTER, quantiles=(0.1, 0.9),
                                                       restore=restore)])
    assert (resumed.restored_from, resumed.replayed, resumed.observations) == ("snapshot", 2, 13)
    reference = ModelHost(CONFIG, snapshot_every=10)
    reference.learn(requests(0, 12))
    [expected] = reference.learn([LearnRequest(key="acme/api", value=3.0, end=AFTER, quantiles=(0.1, 0.9))])
    assert resumed.forecast.mean == pytest.approx(expected.forecast.mean)


def test_a_request_for_a_model_the_host_does_not_hold_fails_instead_of_starting_a_new_one() -> None:
    with pytest.raises(KeyError):
        ModelHost(CONFIG, snapshot_every=10).learn(requests(1, 1))
