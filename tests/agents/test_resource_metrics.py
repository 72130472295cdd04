"""The resource-metrics agent's input buffer: a whole batch may wait while one is folded."""

from agents.resource_metrics import SETTINGS, resource_metrics
from agents.runtime import topic


def test_a_whole_batch_may_wait_in_the_metrics_agents_buffer() -> None:
    channel = resource_metrics.channel
    assert channel.maxsize == SETTINGS.metrics_batch_max
    assert channel.clone(is_iterator=True).queue.maxsize == SETTINGS.metrics_batch_max


def test_other_topics_keep_fausts_default_buffer() -> None:
    assert topic("tenant-created-events").maxsize is None
