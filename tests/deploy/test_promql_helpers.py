"""The PromQL reader the deploy tests rely on finds metric names, and only them."""

from __future__ import annotations

from tests.deploy.promql import exported_names, metric_names


def test_metric_names_skip_functions_labels_ranges_and_keywords() -> None:
    expr = ('histogram_quantile(0.9, sum by (resource, le) (rate(provisioning_resource_ready_seconds_bucket'
            '{resource!="s3",le="+Inf"}[$__rate_interval]))) > 600 and on (resource) up == 0 '
            'unless sum without (instance) (x_total offset 5m)')
    assert metric_names(expr) == {"provisioning_resource_ready_seconds_bucket", "up", "x_total"}


def test_exported_names_have_the_series_suffixes_and_not_unknown_names() -> None:
    names = exported_names()
    assert {"provisioning_events_processed_total", "provisioning_resource_ready_seconds_bucket",
            "provisioning_build_info", "provisioning_ready", "provisioning_consumer_lag_messages"} <= names
    assert "provisioning_nonexistent_total" not in names
