"""model_snapshots: "tenant id/workload" -> ModelSnapshot (the workload's forecaster, pickled, base64)."""

from pipeline.app import ProvisioningApp, table_options
from pipeline.scaling.records import ModelSnapshot
from pipeline.typed_table import TypedTable

HELP = ("Latest snapshot of each workload's online forecaster (River version, observations, window end, the "
        "blob); a worker that gets the workload restores it and replays the windows closed since.")


def declare(app: ProvisioningApp) -> TypedTable[ModelSnapshot]:
    """Declare the table on ``app`` (its name is its changelog topic's: never rename it)."""
    return TypedTable(app.Table("model_snapshots", **table_options(HELP)), ModelSnapshot, "model-snapshots")
