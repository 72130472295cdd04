"""provisioning-status: tenant id -> ProvisioningStatus (one entry per backend resource)."""

from pipeline.app import app, table_options
from pipeline.tenants.models import ProvisioningStatus
from pipeline.typed_table import TypedTable

HELP = "Per-resource provisioning status of each tenant: state, attempts, last error, timestamps."
table = app.Table("provisioning-status", **table_options(HELP))
provisioning_status: TypedTable[ProvisioningStatus] = TypedTable(table, ProvisioningStatus, "provisioning-status")
