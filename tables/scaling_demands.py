"""scaling_demands: "tenant id/workload" -> Demand, on ONE partition: the fair-share pool.

Written only by the agent of the one-partition ``scaling-demands`` topic, so its changelog has one
partition too (Faust requires a table's changelog to have as many partitions as its source topic).
"""

from pipeline.app import app, table_options
from pipeline.scaling.records import Demand
from pipeline.typed_table import TypedTable

HELP = "Latest desired capacity of every workload in the fair-share pool, and the grant last sent to it."
table = app.Table("scaling_demands", partitions=1, **table_options(HELP))
scaling_demands: TypedTable[Demand] = TypedTable(table, Demand, "scaling-demands")
