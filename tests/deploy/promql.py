"""What the deploy tests need to read PromQL: the metric names an expression uses, and the names the worker
exports (its prometheus-client registry, the same objects /metrics serves)."""

from __future__ import annotations

import re

from prometheus_client import REGISTRY

import pipeline.metrics
import pipeline.scaling.metrics
from pipeline import worker_metrics
from pipeline.compute import cost_metrics

_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
}
#: Series Prometheus makes itself, not the worker.
PROMETHEUS_SERIES = {"up"}


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression (function names, label names and keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        token = match.group(0)
        after_digit = match.start() > 0 and text[match.start() - 1].isdigit()  # a duration's unit (5m) or 1e3
        if after_digit or token in _WORDS or text[match.end():].lstrip().startswith("("):
            continue
        names.add(token)
    return names


def exported_names() -> set[str]:
    """Every series name the worker's registry can export, plus the scrape-time worker and compute spend metrics."""
    assert pipeline.metrics.EVENTS_PROCESSED and pipeline.scaling.metrics.DECISIONS  # both registries imported
    names = {worker_metrics.READY, worker_metrics.CONSUMER_LAG,
             cost_metrics.SPEND, cost_metrics.COMMITTED, cost_metrics.FORECAST, cost_metrics.BUDGET}
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    for family in REGISTRY.collect():  # a labelled metric with no child yet has no samples: add its series
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum"))
        elif family.type == "info":
            names.add(f"{family.name}_info")
    return names
