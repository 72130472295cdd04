import gc
from collections.abc import Iterator

import pytest
from faust.types import Message

from pipeline.app import create_app
from pipeline.config import Settings
from pipeline.faust_tuning import GC_YOUNG_THRESHOLD, RawBytesSchema, tune_garbage_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def tracked(obj: object) -> bool:
    """Whether a collection would scan ``obj`` (frozen objects are in none of the three generations)."""
    return any(o is obj for o in gc.get_objects())


def test_what_exists_at_start_is_no_longer_scanned_and_young_collections_are_rarer(
    restored_collector: None,
) -> None:
    before = {"created": ["before the worker starts"]}
    assert tracked(before)
    tune_garbage_collector()
    after = {"created": ["while the worker runs"]}
    assert not tracked(before) and tracked(after)
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD


async def test_raw_topics_hand_the_agents_the_bytes_kafka_holds() -> None:
    message = Message(topic="resource-metrics", partition=0, offset=7, timestamp=0.0, timestamp_type=0,
                      headers=[], key=b"acme", value=b'{"event_id": "e1"}', checksum=None)
    event = await RawBytesSchema().decode(create_app(Settings()), message)
    assert (event.key, event.value, event.message) == (b"acme", b'{"event_id": "e1"}', message)
