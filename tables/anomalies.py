"""anomalies: tenant id -> AnomalyLog (recent anomalies and quarantined resources)."""

from pipeline.app import ProvisioningApp, table_options
from pipeline.tenants.models import AnomalyLog
from pipeline.typed_table import TypedTable

HELP = "Recent resource anomalies per tenant, the reaction applied, and quarantined resources."


def declare(app: ProvisioningApp) -> TypedTable[AnomalyLog]:
    """Declare the table on ``app`` (its name is its changelog topic's: never rename it)."""
    return TypedTable(app.Table("anomalies", **table_options(HELP)), AnomalyLog, "anomalies")
