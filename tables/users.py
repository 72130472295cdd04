"""users: "tenant id/user id" -> UserRecord."""

from pipeline.app import ProvisioningApp, table_options
from pipeline.tenants.models import UserRecord
from pipeline.typed_table import TypedTable

HELP = "Users of each tenant, keyed tenant_id/user_id."


def declare(app: ProvisioningApp) -> TypedTable[UserRecord]:
    """Declare the table on ``app`` (its name is its changelog topic's: never rename it)."""
    return TypedTable(app.Table("users", **table_options(HELP)), UserRecord, "users")
