"""quotas: tenant id -> QuotaRecord."""

from pipeline.app import app, table_options
from pipeline.tenants.models import QuotaRecord
from pipeline.typed_table import TypedTable

HELP = "Quota limits per tenant (cpu, memory, gpus, storage) and the resources it is over."
table = app.Table("quotas", **table_options(HELP))
quotas: TypedTable[QuotaRecord] = TypedTable(table, QuotaRecord, "quotas")
