"""scaling_demands: "tenant id/workload" -> Demand, on ONE partition: the fair-share pool.

Written only by the agent of the one-partition ``scaling-demands`` topic, so its changelog has one
partition too (Faust requires a table's changelog to have as many partitions as its source topic).
"""

from pipeline.app import ProvisioningApp, table_options
from pipeline.scaling.records import Demand
from pipeline.typed_table import TypedTable

HELP = "Latest desired capacity of every workload in the fair-share pool, and the grant last sent to it."


def declare(app: ProvisioningApp) -> TypedTable[Demand]:
    """Declare the table on ``app`` (its name is its changelog topic's: never rename it)."""
    return TypedTable(app.Table("scaling_demands", partitions=1, **table_options(HELP)), Demand, "scaling-demands")
