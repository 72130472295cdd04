"""scaling_state: "tenant id/workload" -> WorkloadScaling (the decision loop's memory of one workload)."""

from pipeline.app import ProvisioningApp, table_options
from pipeline.scaling.records import WorkloadScaling
from pipeline.typed_table import TypedTable

HELP = ("Per workload: recent closed windows, forecaster progress and latest forecast, decision state (HPA history, "
        "spend), last decision and its inputs, fair-share grant, what the Kubernetes API last said.")


def declare(app: ProvisioningApp) -> TypedTable[WorkloadScaling]:
    """Declare the table on ``app`` (its name is its changelog topic's: never rename it)."""
    return TypedTable(app.Table("scaling_state", **table_options(HELP)), WorkloadScaling, "scaling-state")
