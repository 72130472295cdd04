"""provisioning-status: tenant id -> ProvisioningStatus (one entry per backend resource)."""

from pipeline.app import ProvisioningApp, table_options
from pipeline.tenants.models import ProvisioningStatus
from pipeline.typed_table import TypedTable

HELP = "Per-resource provisioning status of each tenant: state, attempts, last error, timestamps."


def declare(app: ProvisioningApp) -> TypedTable[ProvisioningStatus]:
    """Declare the table on ``app`` (its name is its changelog topic's: never rename it)."""
    table = app.Table("provisioning-status", **table_options(HELP))
    return TypedTable(table, ProvisioningStatus, "provisioning-status")
