"""scaling_policies: tenant id -> PolicySet (every scaling policy of the tenant, by policy id)."""

from pipeline.app import ProvisioningApp, table_options
from pipeline.scaling.records import PolicySet
from pipeline.typed_table import TypedTable

HELP = "Scaling policies of a tenant (target tracking, predictive, scheduled, cost-aware), by policy id."


def declare(app: ProvisioningApp) -> TypedTable[PolicySet]:
    """Declare the table on ``app`` (its name is its changelog topic's: never rename it)."""
    return TypedTable(app.Table("scaling_policies", **table_options(HELP)), PolicySet, "scaling-policies")
