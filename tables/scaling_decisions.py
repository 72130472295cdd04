"""scaling_decisions: "tenant id/workload/slot" -> StoredDecision (a ring of a workload's most recent decisions).

A decision is one record (a few KB): slot ``seq % SCALING_RECENT_DECISIONS``, so storing one never rewrites the
others. The workload's state says how many were stored.
"""

from pipeline.app import ProvisioningApp, table_options
from pipeline.scaling.records import StoredDecision
from pipeline.typed_table import TypedTable

HELP = "Recent scaling decisions of each workload with their explanation, one per slot of a ring."


def declare(app: ProvisioningApp) -> TypedTable[StoredDecision]:
    """Declare the table on ``app`` (its name is its changelog topic's: never rename it)."""
    return TypedTable(app.Table("scaling_decisions", **table_options(HELP)), StoredDecision, "scaling-decisions")
