"""tenants: tenant id -> TenantRecord."""

from pipeline.app import ProvisioningApp, table_options
from pipeline.tenants.models import TenantRecord
from pipeline.typed_table import TypedTable

HELP = "Tenants by id: name, tier, region, owner and lifecycle state."


def declare(app: ProvisioningApp) -> TypedTable[TenantRecord]:
    """Declare the table on ``app`` (its name is its changelog topic's: never rename it)."""
    return TypedTable(app.Table("tenants", **table_options(HELP)), TenantRecord, "tenants")
