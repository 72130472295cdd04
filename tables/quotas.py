"""quotas: tenant id -> QuotaRecord."""

from pipeline.app import ProvisioningApp, table_options
from pipeline.tenants.models import QuotaRecord
from pipeline.typed_table import TypedTable

HELP = "Quota limits per tenant (cpu, memory, gpus, storage) and the resources it is over."


def declare(app: ProvisioningApp) -> TypedTable[QuotaRecord]:
    """Declare the table on ``app`` (its name is its changelog topic's: never rename it)."""
    return TypedTable(app.Table("quotas", **table_options(HELP)), QuotaRecord, "quotas")
