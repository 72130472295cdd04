"""utilization: "tenant id/workload" -> WindowStats per tumbling window of UTILIZATION_WINDOW_SECONDS."""

from datetime import timedelta

from pipeline.app import app, table_options

HELP = "Tumbling-window utilization aggregates (count, mean/max cpu, memory, gpus, requests) per workload."
WINDOW = timedelta(seconds=app.settings.utilization_window_seconds)
table = (
    app.Table("utilization", default=dict, **table_options(HELP))
    .tumbling(WINDOW, expires=WINDOW * 60)
    .relative_to_stream()
)
