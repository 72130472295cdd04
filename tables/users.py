"""users: "tenant id/user id" -> UserRecord."""

from pipeline.app import app, table_options
from pipeline.tenants.models import UserRecord
from pipeline.typed_table import TypedTable

HELP = "Users of each tenant, keyed tenant_id/user_id."
table = app.Table("users", **table_options(HELP))
users: TypedTable[UserRecord] = TypedTable(table, UserRecord, "users")
