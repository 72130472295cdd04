"""scaling_decisions: "tenant id/workload" -> DecisionLog (the most recent decisions, newest first)."""

from pipeline.app import app, table_options
from pipeline.scaling.records import DecisionLog
from pipeline.typed_table import TypedTable

HELP = "Recent scaling decisions of a workload with their explanation (SCALING_RECENT_DECISIONS of them)."
table = app.Table("scaling_decisions", **table_options(HELP))
scaling_decisions: TypedTable[DecisionLog] = TypedTable(table, DecisionLog, "scaling-decisions")
