"""usage: tenant id -> UsageRecord (latest sample per workload)."""

from pipeline.app import app, table_options
from pipeline.typed_table import TypedTable
from pipeline.usage import UsageRecord

HELP = "Latest resource usage sample of every workload of a tenant."
table = app.Table("usage", **table_options(HELP))
usage: TypedTable[UsageRecord] = TypedTable(table, UsageRecord, "usage")
