"""scaling_index: tenant id -> WorkloadIndex (the tenant's workloads that have a scaling state)."""

from pipeline.app import ProvisioningApp, table_options
from pipeline.scaling.records import WorkloadIndex
from pipeline.typed_table import TypedTable

HELP = "The workloads of a tenant known to the scaling engine (to list its decisions)."


def declare(app: ProvisioningApp) -> TypedTable[WorkloadIndex]:
    """Declare the table on ``app`` (its name is its changelog topic's: never rename it)."""
    return TypedTable(app.Table("scaling_index", **table_options(HELP)), WorkloadIndex, "scaling-index")
