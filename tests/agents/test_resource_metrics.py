"""The resource-metrics agent's input buffer: a whole batch may wait while one is folded."""

from pipeline.worker import Worker


def test_a_whole_batch_may_wait_in_the_metrics_agents_buffer(worker: Worker) -> None:
    channel = worker.app.agents["agents.resource_metrics.resource_metrics"].channel
    assert channel.maxsize == worker.settings.metrics_batch_max
    assert channel.clone(is_iterator=True).queue.maxsize == worker.settings.metrics_batch_max


def test_other_topics_keep_fausts_default_buffer(worker: Worker) -> None:
    assert worker.deps.io.topic("tenant-created-events").maxsize is None
