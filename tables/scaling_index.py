"""scaling_index: tenant id -> WorkloadIndex (the tenant's workloads that have a scaling state)."""

from pipeline.app import app, table_options
from pipeline.scaling.records import WorkloadIndex
from pipeline.typed_table import TypedTable

HELP = "The workloads of a tenant known to the scaling engine (to list its decisions)."
table = app.Table("scaling_index", **table_options(HELP))
scaling_index: TypedTable[WorkloadIndex] = TypedTable(table, WorkloadIndex, "scaling-index")
