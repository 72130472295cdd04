"""resource-metrics (a second consumer, next to ``resource_metrics``): per-workload windows -> forecasts -> decisions.

Samples are accumulated in memory per workload and window; the first sample of a later window closes the
previous one: its demand is learned, forecast and decided on (``pipeline/scaling/engine.py``). Invalid
events are skipped here (the ``resource_metrics`` agent dead-letters them).
"""

import logging
from typing import Any

from pydantic import ValidationError

from agents.runtime import topic
from agents.scaling_runtime import ENABLED, ENGINE, carry_out
from pipeline.app import app
from pipeline.events.models import ResourceMetrics
from pipeline.topics import RESOURCE_METRICS

logger = logging.getLogger(__name__)


@app.agent(topic(RESOURCE_METRICS), concurrency=1)
async def scaling_metrics(stream: Any) -> None:
    async for message in stream.events():
        if not ENABLED:
            continue
        try:
            sample = ResourceMetrics.model_validate_json(message.value)
        except (ValidationError, ValueError, TypeError):
            continue
        try:
            await carry_out(ENGINE.on_sample(sample))
        except Exception:
            ENGINE.forget()  # a half-made change must not stay cached
            logger.exception("scaling failed on a sample of %s/%s", sample.tenant_id, sample.workload)
