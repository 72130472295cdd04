"""budget-alerts: tenant id -> BudgetAlertState (the budget-alert thresholds already announced this period).

Written only by the compute-records agent (keyed by tenant id), after it sent the alert events: a redelivered
or replayed record finds the threshold recorded and sends nothing again.
"""

from pipeline.app import ProvisioningApp, table_options
from pipeline.compute.budget_alerts import BudgetAlertState
from pipeline.typed_table import TypedTable

HELP = "Budget-alert thresholds (fractions of the compute budget) already announced per tenant, and their period."


def declare(app: ProvisioningApp) -> TypedTable[BudgetAlertState]:
    """Declare the table on ``app`` (its name is its changelog topic's: never rename it)."""
    return TypedTable(app.Table("budget-alerts", **table_options(HELP)), BudgetAlertState, "budget-alerts")
