"""model_snapshots: "tenant id/workload" -> ModelSnapshot (the workload's forecaster, pickled, base64)."""

from pipeline.app import app, table_options
from pipeline.scaling.records import ModelSnapshot
from pipeline.typed_table import TypedTable

HELP = ("Latest snapshot of each workload's online forecaster (River version, observations, window end, the "
        "blob); a worker that gets the workload restores it and replays the windows closed since.")
table = app.Table("model_snapshots", **table_options(HELP))
model_snapshots: TypedTable[ModelSnapshot] = TypedTable(table, ModelSnapshot, "model-snapshots")
