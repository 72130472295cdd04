"""scaling_policies: tenant id -> PolicySet (every scaling policy of the tenant, by policy id)."""

from pipeline.app import app, table_options
from pipeline.scaling.records import PolicySet
from pipeline.typed_table import TypedTable

HELP = "Scaling policies of a tenant (target tracking, predictive, scheduled, cost-aware), by policy id."
table = app.Table("scaling_policies", **table_options(HELP))
scaling_policies: TypedTable[PolicySet] = TypedTable(table, PolicySet, "scaling-policies")
