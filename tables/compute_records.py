"""compute-records: "tenant id/request id" -> ComputeRecord (one compute request's lifecycle).

Written only by the agent of ``<app id>-compute-records`` (keyed by tenant id, like every per-tenant input), from
the records the worker running a request sends; records only move forward (``runtime.apply_record``).
No record holds a secret: access details are masked (public key, fingerprint, ``token=***``).
"""

from pipeline.app import ProvisioningApp, table_options
from pipeline.compute.lifecycle import ComputeRecord
from pipeline.typed_table import TypedTable

HELP = (
    "Compute requests by tenant/request id: request, state and history, decision (candidates and why every "
    "other offer was excluded), attempts, chosen offer and price, masked access details, timestamps."
)


def declare(app: ProvisioningApp) -> TypedTable[ComputeRecord]:
    """Declare the table on ``app`` (its name is its changelog topic's: never rename it)."""
    return TypedTable(app.Table("compute-records", **table_options(HELP)), ComputeRecord, "compute-records")
