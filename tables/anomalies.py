"""anomalies: tenant id -> AnomalyLog (recent anomalies and quarantined resources)."""

from pipeline.app import app, table_options
from pipeline.tenants.models import AnomalyLog
from pipeline.typed_table import TypedTable

HELP = "Recent resource anomalies per tenant, the reaction applied, and quarantined resources."
table = app.Table("anomalies", **table_options(HELP))
anomalies: TypedTable[AnomalyLog] = TypedTable(table, AnomalyLog, "anomalies")
