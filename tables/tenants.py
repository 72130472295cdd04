"""tenants: tenant id -> TenantRecord."""

from pipeline.app import app, table_options
from pipeline.tenants.models import TenantRecord
from pipeline.typed_table import TypedTable

HELP = "Tenants by id: name, tier, region, owner and lifecycle state."
table = app.Table("tenants", **table_options(HELP))
tenants: TypedTable[TenantRecord] = TypedTable(table, TenantRecord, "tenants")
