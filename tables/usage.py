"""usage: tenant id -> UsageRecord (latest sample per workload)."""

from pipeline.app import ProvisioningApp, table_options
from pipeline.typed_table import TypedTable
from pipeline.usage import UsageRecord

HELP = "Latest resource usage sample of every workload of a tenant."


def declare(app: ProvisioningApp) -> TypedTable[UsageRecord]:
    """Declare the table on ``app`` (its name is its changelog topic's: never rename it)."""
    return TypedTable(app.Table("usage", **table_options(HELP)), UsageRecord, "usage")
