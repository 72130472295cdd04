"""What each tenant-related event does to the tenant's state, and what it emits.

Plain functions over typed tables: the agents call them, unit tests call them with dict-backed tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from pipeline.contract.records import ProvisioningResult
from pipeline.contract.topics import PROVISIONING_COMMANDS, PROVISIONING_EVENTS
from pipeline.events.models import (
    CommandAction,
    ProvisioningCommand,
    ProvisioningStatusEvent,
    QuotaExceeded,
    QuotaResource,
    QuotaUpdateRequested,
    TenantCreated,
    TenantDeleted,
    Tier,
    UserCreated,
    UserDeleted,
)
from pipeline.metrics import RESOURCE_READY_SECONDS
from pipeline.outputs import Emit, Refused, derived_id
from pipeline.provisioners.base import RESOURCES
from pipeline.provisioners.tiers import Quota
from pipeline.tenants.models import (
    OverQuota,
    ProvisioningStatus,
    QuotaRecord,
    ResourceState,
    ResourceStatus,
    TenantRecord,
    TenantState,
    TenantUsers,
    UserRecord,
    UserState,
    UserView,
    quota_limit,
)
from pipeline.tenants.quota_marks import lifted_by_admin
from pipeline.typed_table import TypedTable

#: Resources every tenant gets, in provisioning order (teardown runs in reverse).
TENANT_RESOURCES: tuple[str, ...] = RESOURCES
#: Resources that hold per-user access (their provisioners implement ``UserAccess``) and get a
#: ``create_user`` command when a user is created, a ``delete_user`` command when it is deleted. Cassandra and
#: S3 are not among them: see the README's event table (the local servers cannot enforce per-user grants).
USER_RESOURCES: tuple[str, ...] = ("kubernetes", "pulsar", "openproject")
#: User command actions, whose status lives in the user's record (not the tenant's status).
USER_ACTIONS: tuple[CommandAction, ...] = (CommandAction.CREATE_USER, CommandAction.DELETE_USER)
#: Which backends a quota resource gates while the tenant is over it.
GATED_BY: dict[QuotaResource, tuple[str, ...]] = {
    QuotaResource.STORAGE_GIB: ("cassandra", "s3", "elasticsearch", "ignite"),
    QuotaResource.CPU_CORES: ("kubernetes", "compute"),
    QuotaResource.MEMORY_GIB: ("kubernetes", "compute"),
    QuotaResource.GPUS: ("kubernetes", "compute"),
}

QuotaForTier = Callable[[Tier], Quota]


@dataclass(frozen=True)
class TenantStores:
    tenants: TypedTable[TenantRecord]
    quotas: TypedTable[QuotaRecord]
    status: TypedTable[ProvisioningStatus]
    users: TypedTable[UserRecord]


def require_tenant(stores: TenantStores, tenant_id: str) -> TenantRecord:
    tenant = stores.tenants.get(tenant_id)
    if tenant is None or tenant.state is TenantState.DELETED:
        raise Refused("unknown-tenant", f"tenant {tenant_id!r} does not exist")
    return tenant


def refusal_for(quota: QuotaRecord | None, resource: str) -> str | None:
    """Why new provisioning of ``resource`` is refused for this tenant, or None if it is allowed."""
    if quota is None:
        return None
    for quota_resource, over in quota.over_quota.items():
        if resource in GATED_BY[quota_resource]:
            return (
                f"tenant is over its {quota_resource.value} quota (used {over.used:g} of {over.limit:g} "
                f"since {over.since.isoformat()}); new {resource} provisioning is refused until it is back "
                "under quota or the quota is raised"
            )
    return None


def _status_event(
    tenant_id: str, resource: str, status: ResourceStatus, previous: str | None, kind: str = "resource-status"
) -> Emit:
    return Emit(
        PROVISIONING_EVENTS,
        tenant_id,
        ProvisioningStatusEvent(
            # The transition's time is part of the id: a command run again (drift repair, stale restart) goes
            # through the same (status, attempts) pairs, and each of those transitions is a new event. A
            # redelivered result keeps its time, so its event keeps its id.
            event_id=derived_id(
                status.command_id, status.status.value, str(status.attempts), status.updated_at.isoformat()
            ),
            tenant_id=tenant_id,
            occurred_at=status.updated_at,
            kind=kind,  # type: ignore[arg-type]
            resource=resource,
            status=status.status.value,
            previous_status=previous,
            detail=_event_detail(status),
        ),
    )


def _event_detail(status: ResourceStatus) -> dict[str, object]:
    """What a status event tells besides the state: the last error, or why the resource was skipped."""
    if status.last_error:
        return {"last_error": status.last_error}
    reason = status.detail.get("reason") if status.status is ResourceState.SKIPPED else None
    return {"reason": reason} if isinstance(reason, str) else {}


def provisioning_commands(
    tenant: TenantRecord,
    quota: QuotaRecord | None,
    action: CommandAction,
    cause_event_id: str,
    now: datetime,
    resources: Sequence[str] = TENANT_RESOURCES,
    extra_spec: dict[str, object] | None = None,
) -> list[ProvisioningCommand]:
    spec = {
        "tenant_id": tenant.tenant_id,
        "name": tenant.name,
        "tier": tenant.tier.value,
        "region": tenant.region,
        "owner_user_id": tenant.owner_user_id,
        # None: a tenant whose quota record a crash left unwritten (its tier's quota applies)
        **({"quota": quota.limits.model_dump()} if quota is not None else {}),
        **(extra_spec or {}),
    }
    return [
        ProvisioningCommand(
            command_id=derived_id(cause_event_id, resource, action.value),
            tenant_id=tenant.tenant_id,
            resource=resource,
            action=action,
            issued_at=now,
            cause_event_id=cause_event_id,
            spec=spec,
            generation=tenant.generation,
        )
        for resource in resources
    ]


def start_provisioning(
    stores: TenantStores,
    tenant: TenantRecord,
    cause_event_id: str,
    action: CommandAction,
    now: datetime,
    extra_spec: dict[str, object] | None = None,
    resources: Sequence[str] | None = None,
) -> list[Emit]:
    """Commands for every resource of the tenant (or ``resources``), each resource's status set to pending
    (or refused)."""
    quota = stores.quotas.get(tenant.tenant_id)
    assert quota is not None
    status = stores.status.get(tenant.tenant_id) or ProvisioningStatus(tenant_id=tenant.tenant_id)
    if resources is None:
        resources = TENANT_RESOURCES if action is CommandAction.CREATE else tuple(reversed(TENANT_RESOURCES))
    emits: list[Emit] = []
    for command in provisioning_commands(tenant, quota, action, cause_event_id, now, resources, extra_spec):
        previous = status.resources.get(command.resource)
        refusal = refusal_for(quota, command.resource) if action is CommandAction.CREATE else None
        state = ResourceState.REFUSED if refusal else (
            ResourceState.PENDING if action is CommandAction.CREATE else ResourceState.DELETING
        )
        entry = ResourceStatus(
            resource=command.resource,
            status=state,
            command_id=command.command_id,
            updated_at=now,
            last_error=refusal,
        )
        status.resources[command.resource] = entry
        if refusal is None:
            emits.append(Emit(PROVISIONING_COMMANDS, tenant.tenant_id, command))
        previous_status = previous.status.value if previous else None
        emits.append(_status_event(tenant.tenant_id, command.resource, entry, previous_status))
    stores.status.put(tenant.tenant_id, status)
    return emits


def resend_pending(
    stores: TenantStores, tenant: TenantRecord, cause_event_id: str, quota_for_tier: QuotaForTier, now: datetime
) -> list[Emit]:
    """A redelivered event whose tenant is already recorded: send again (same ids) the commands of resources
    still pending, since the first delivery may have died between the table writes and the sends.

    A kill can also land between the writes of the tenant, its quota and its status (each its own changelog
    record): a missing quota is derived from the tier again, and a resource with no status at all counts as
    pending (its command goes out again, with its status).
    """
    stores.tenants.put(tenant.tenant_id, tenant)  # the local store may hold it while its changelog does not
    quota = stores.quotas.get(tenant.tenant_id)
    if quota is None:
        quota = QuotaRecord(tenant_id=tenant.tenant_id, limits=quota_for_tier(tenant.tier), updated_at=now,
                            updated_by=f"tier:{tenant.tier.value}")
        stores.quotas.put(tenant.tenant_id, quota)
    status = stores.status.get(tenant.tenant_id) or ProvisioningStatus(tenant_id=tenant.tenant_id)
    unrecorded = tuple(r for r in TENANT_RESOURCES if r not in status.resources)
    if unrecorded:
        return start_provisioning(stores, tenant, cause_event_id, CommandAction.CREATE, now, resources=unrecorded)
    pending = tuple(r for r, s in status.resources.items() if s.status is ResourceState.PENDING)
    commands = provisioning_commands(tenant, quota, CommandAction.CREATE, cause_event_id, now, pending)
    return [Emit(PROVISIONING_COMMANDS, tenant.tenant_id, c) for c in commands]


def refusal_to_create(existing: TenantRecord | None, event: TenantCreated) -> Refused | None:
    """Why ``event`` may not (re)create its tenant id, or None. A deleted id is reused only after a purge:
    otherwise the new tenant would adopt the previous owner's keyspace, bucket and index."""
    if existing is None:
        return None
    if existing.state is TenantState.DELETING:
        return Refused(
            "tenant-deleting",
            f"tenant {event.tenant_id!r} is being deleted; create it again once the deletion finished",
        )
    if existing.state is TenantState.ACTIVE:
        return Refused(
            "tenant-exists",
            f"tenant {event.tenant_id!r} already exists (created by event {existing.source_event_id})",
        )
    if event.event_id == existing.source_event_id or (
        existing.deleted_at is not None and event.occurred_at <= existing.deleted_at
    ):  # the same event again, or one from before the delete
        return Refused(
            "stale-create",
            f"tenant {event.tenant_id!r} was deleted after this create event (a replay or a late retry); "
            "it is not re-created",
        )
    if existing.data_retained:
        return Refused(
            "tenant-id-retained",
            f"tenant id {event.tenant_id!r} was deleted without purge and its data (keyspace, bucket, index) "
            "is kept; delete it again with purge=true before reusing the id",
        )
    return None


def handle_tenant_created(
    event: TenantCreated, stores: TenantStores, quota_for_tier: QuotaForTier, now: datetime
) -> list[Emit]:
    existing = stores.tenants.get(event.tenant_id)
    if existing is not None and existing.source_event_id == event.event_id:
        # A redelivery: send again what is still pending, unless the tenant was deleted since (then nothing:
        # a replayed create never re-creates a deleted tenant).
        if existing.state is not TenantState.ACTIVE:
            return []
        return resend_pending(stores, existing, event.event_id, quota_for_tier, now)
    refused = refusal_to_create(existing, event)
    if refused is not None:
        raise refused
    tenant = TenantRecord(
        tenant_id=event.tenant_id,
        name=event.name,
        tier=event.tier,
        region=event.region,
        owner_user_id=event.owner_user_id,
        created_at=event.occurred_at,
        updated_at=now,
        source_event_id=event.event_id,
        generation=existing.generation + 1 if existing is not None else 1,
    )
    stores.tenants.put(tenant.tenant_id, tenant)
    quota = stores.quotas.get(tenant.tenant_id)
    if quota is None or existing is not None:
        # A purged id starts over: the previous incarnation's quota and its over-quota marks do not carry over.
        stores.quotas.put(
            tenant.tenant_id,
            QuotaRecord(
                tenant_id=tenant.tenant_id,
                limits=quota_for_tier(event.tier),
                updated_at=now,
                updated_by=f"tier:{event.tier.value}",
            ),
        )
    return start_provisioning(stores, tenant, event.event_id, CommandAction.CREATE, now)


def handle_tenant_deleted(event: TenantDeleted, stores: TenantStores, now: datetime) -> list[Emit]:
    """Start the teardown. The tenant leaves ``active`` at once, which fences every create command of it still
    queued or retrying (:func:`command_fence`). A tenant deleted without purge may be deleted again with purge."""
    tenant = stores.tenants.get(event.tenant_id)
    if tenant is None or (tenant.state is TenantState.DELETED and not (event.purge and tenant.data_retained)):
        raise Refused("unknown-tenant", f"tenant {event.tenant_id!r} does not exist")
    if tenant.state is TenantState.DELETING and (tenant.purged or not event.purge):
        return []
    tenant = tenant.model_copy(
        update={"state": TenantState.DELETING, "updated_at": now, "deleted_at": event.occurred_at,
                "purged": event.purge}
    )
    stores.tenants.put(tenant.tenant_id, tenant)
    return start_provisioning(
        stores, tenant, event.event_id, CommandAction.DELETE, now, extra_spec={"purge": event.purge}
    )


def user_key(tenant_id: str, user_id: str) -> str:
    return f"{tenant_id}/{user_id}"


def _user_spec(user: UserRecord) -> dict[str, object]:
    return {"user": {"user_id": user.user_id, "email": user.email, "roles": list(user.roles)}}


def _user_commands(
    stores: TenantStores, tenant: TenantRecord, user: UserRecord, action: CommandAction, cause_event_id: str,
    now: datetime,
) -> list[ProvisioningCommand]:
    quota = stores.quotas.get(tenant.tenant_id)
    assert quota is not None
    return provisioning_commands(tenant, quota, action, cause_event_id, now, USER_RESOURCES, _user_spec(user))


def _start_user_commands(
    stores: TenantStores, tenant: TenantRecord, user: UserRecord, action: CommandAction, cause_event_id: str,
    now: datetime,
) -> list[Emit]:
    """The user's commands, each resource's status in the user's record set to pending (deleting)."""
    commands = _user_commands(stores, tenant, user, action, cause_event_id, now)
    state = ResourceState.PENDING if action is CommandAction.CREATE_USER else ResourceState.DELETING
    for command in commands:
        user.resources[command.resource] = ResourceStatus(
            resource=command.resource, status=state, command_id=command.command_id, updated_at=now,
        )
    stores.users.put(user_key(tenant.tenant_id, user.user_id), user)
    return [Emit(PROVISIONING_COMMANDS, tenant.tenant_id, c) for c in commands]


def handle_user_created(event: UserCreated, stores: TenantStores, now: datetime) -> list[Emit]:
    """Record the user and send its grant commands (``create_user``, one per resource in USER_RESOURCES).

    A redelivery of the event that created the user writes the same record and sends the same commands (the
    same ids) again: a kill can leave the user in the worker's local store while neither its changelog record
    nor its commands reached Kafka, and a redelivery that did nothing would lose both for good (a command
    already finished is skipped by the executor). A user created by another event is left as it is, unless
    that user was deleted before this event happened: then it is created again.
    """
    tenant = require_tenant(stores, event.tenant_id)
    key = user_key(event.tenant_id, event.user_id)
    existing = stores.users.get(key)
    if existing is not None and existing.source_event_id == event.event_id:
        if existing.state is not UserState.ACTIVE:
            return []  # deleted since: a replayed create never re-creates a deleted user
        stores.users.put(key, existing)  # the local store may hold it while its changelog does not
        commands = _user_commands(stores, tenant, existing, CommandAction.CREATE_USER, event.event_id, now)
        return [Emit(PROVISIONING_COMMANDS, tenant.tenant_id, c) for c in commands]
    if existing is not None:
        if existing.state is UserState.ACTIVE:
            return []
        if existing.deleted_at is not None and event.occurred_at <= existing.deleted_at:
            raise Refused("stale-create", f"user {event.user_id!r} was deleted after this create event; "
                          "it is not re-created")
    user = UserRecord(
        tenant_id=event.tenant_id,
        user_id=event.user_id,
        email=event.email,
        roles=event.roles,
        created_at=event.occurred_at,
        source_event_id=event.event_id,
    )
    # Any delete_user command still running for an earlier incarnation is fenced: each resource's entry now
    # names this create's command.
    return _start_user_commands(stores, tenant, user, CommandAction.CREATE_USER, event.event_id, now)


def handle_user_deleted(event: UserDeleted, stores: TenantStores, now: datetime) -> list[Emit]:
    """Mark the user deleting and send its revoke commands (``delete_user``, one per resource).

    Redelivery-safe: the event that started the deletion sends the same commands (same ids) again while the
    user is deleting, nothing once it is deleted. An unknown (or already deleted) user is refused with a
    reason (dead letter), like an unknown tenant. A tenant that is being deleted needs no per-user revokes:
    its namespace, Pulsar namespace and project go away with everything in them, so nothing is sent.
    """
    tenant = require_tenant(stores, event.tenant_id)
    if tenant.state is TenantState.DELETING:
        return []
    key = user_key(event.tenant_id, event.user_id)
    user = stores.users.get(key)
    if user is not None and user.delete_event_id == event.event_id:
        if user.state is not UserState.DELETING:
            return []
        stores.users.put(key, user)
        commands = _user_commands(stores, tenant, user, CommandAction.DELETE_USER, event.event_id, now)
        return [Emit(PROVISIONING_COMMANDS, tenant.tenant_id, c) for c in commands]
    if user is None or user.state is UserState.DELETED:
        raise Refused("unknown-user", f"user {event.user_id!r} of tenant {event.tenant_id!r} does not exist")
    if user.state is UserState.DELETING:
        return []  # another delete event is already revoking it
    if event.occurred_at < user.created_at:
        raise Refused("stale-delete", f"user {event.user_id!r} was created after this delete event; "
                      "it is not deleted")
    user = user.model_copy(update={"state": UserState.DELETING, "delete_event_id": event.event_id,
                                   "deleted_at": event.occurred_at})
    return _start_user_commands(stores, tenant, user, CommandAction.DELETE_USER, event.event_id, now)


def handle_user_result(result: ProvisioningResult, stores: TenantStores) -> list[Emit]:
    """A user command's transition: recorded in the user's record (superseded and fenced ones are not)."""
    if result.user_id is None:
        return []
    key = user_key(result.tenant_id, result.user_id)
    user = stores.users.get(key)
    entry = user.resources.get(result.resource) if user else None
    if user is None or entry is None or entry.command_id != result.command_id or result.status == "fenced":
        return []
    updated = entry.model_copy(update={
        "status": _RESULT_STATES[result.status],
        "attempts": result.attempts,
        "last_error": result.error,
        "updated_at": result.at,
        **({"detail": result.detail} if result.status == "skipped" else {}),  # the reason, for the status event
    })
    user.resources[result.resource] = updated
    if result.action is CommandAction.DELETE_USER and all(
        r.status in GONE for r in user.resources.values()
    ):
        user.state = UserState.DELETED
    stores.users.put(key, user)
    return [_status_event(result.tenant_id, f"{result.resource}:{result.action.value}", updated, entry.status.value)]


def tenant_users(users: TypedTable[UserRecord], tenant_id: str) -> TenantUsers:
    """The tenant's users not yet deleted, ordered by user id. Reads this worker's table: the users of a tenant
    live on the worker owning the tenant (its user events are keyed by tenant id)."""
    prefix = f"{tenant_id}/"
    found = sorted(
        (user for key, user in users.items() if key.startswith(prefix) and user.state is not UserState.DELETED),
        key=lambda user: user.user_id,
    )
    return TenantUsers(tenant_id=tenant_id, users=[UserView.of(user) for user in found])


def handle_quota_exceeded(event: QuotaExceeded, stores: TenantStores, now: datetime) -> list[Emit]:
    require_tenant(stores, event.tenant_id)
    quota = stores.quotas.get(event.tenant_id)
    assert quota is not None
    quota.over_quota[event.resource] = OverQuota(
        used=event.used, limit=event.limit, since=event.occurred_at, event_id=event.event_id
    )
    quota.updated_at = now
    stores.quotas.put(event.tenant_id, quota)
    return [
        Emit(
            PROVISIONING_EVENTS,
            event.tenant_id,
            ProvisioningStatusEvent(
                event_id=derived_id(event.event_id, "enforcement"),
                tenant_id=event.tenant_id,
                occurred_at=now,
                kind="quota-enforcement",
                resource=event.resource.value,
                status="over-quota",
                detail={
                    "used": event.used,
                    "limit": event.limit,
                    "refused_backends": list(GATED_BY[event.resource]),
                },
            ),
        )
    ]


def set_quota(
    stores: TenantStores, tenant_id: str, limits: Quota, actor: str, now: datetime
) -> tuple[QuotaRecord, list[QuotaResource]]:
    """Replace the tenant's limits; over-quota marks that the new limits clear are dropped."""
    require_tenant(stores, tenant_id)
    quota = stores.quotas.get(tenant_id)
    assert quota is not None
    cleared = [r for r, over in quota.over_quota.items() if quota_limit(limits, r) > over.used]
    for resource in cleared:
        del quota.over_quota[resource]
    quota.limits = limits
    quota.updated_at = now
    quota.updated_by = actor
    stores.quotas.put(tenant_id, quota)
    return quota, cleared


def handle_quota_update(event: QuotaUpdateRequested, stores: TenantStores, now: datetime) -> list[Emit]:
    """Replace the quota (from the REST API) and have the Kubernetes ResourceQuota follow; or lift the
    over-quota marks an admin asked to lift (announced on provisioning-events; the quota stays)."""
    tenant = require_tenant(stores, event.tenant_id)
    if event.quota is None:
        quota = stores.quotas.get(event.tenant_id)
        if quota is None:
            return []
        lifted, emits = lifted_by_admin(quota, event.lift_over_quota, event.actor, now)
        if lifted is not None:
            stores.quotas.put(event.tenant_id, lifted)
        return emits
    record, _ = set_quota(stores, event.tenant_id, Quota.model_validate(event.quota), event.actor, now)
    commands = provisioning_commands(
        tenant, record, CommandAction.UPDATE_QUOTA, event.event_id, now, resources=("kubernetes",)
    )
    return [Emit(PROVISIONING_COMMANDS, tenant.tenant_id, c) for c in commands]


#: The states of a deletion's resources that finish it (a backend switched off by configuration has nothing to
#: delete here: what an earlier configuration created there is the operator's to remove).
GONE = frozenset({ResourceState.DELETED, ResourceState.SKIPPED})

_RESULT_STATES: dict[str, ResourceState] = {
    "provisioning": ResourceState.PROVISIONING,
    "retrying": ResourceState.RETRYING,
    "waiting": ResourceState.WAITING,
    "ready": ResourceState.READY,
    "failed": ResourceState.FAILED,
    "deleted": ResourceState.DELETED,
    "drifted": ResourceState.DRIFTED,
    "skipped": ResourceState.SKIPPED,
}


def _observe_ready(stores: TenantStores, result: ProvisioningResult) -> None:
    """End-to-end provisioning latency of a resource: the tenant's creation to its first ``ready``."""
    tenant = stores.tenants.get(result.tenant_id)
    if tenant is not None:
        elapsed = (result.at - tenant.created_at).total_seconds()
        if elapsed >= 0:
            RESOURCE_READY_SECONDS.labels(result.resource).observe(elapsed)


def handle_provisioning_result(result: ProvisioningResult, stores: TenantStores, now: datetime) -> list[Emit]:
    """Record a command's transition in the status table and announce it on ``provisioning-events``."""
    status = stores.status.get(result.tenant_id)
    entry = status.resources.get(result.resource) if status else None
    if result.action in USER_ACTIONS and result.user_id is not None:
        return handle_user_result(result, stores)
    tracked = result.action in (CommandAction.CREATE, CommandAction.DELETE)
    if status is None or entry is None or (tracked and entry.command_id != result.command_id):
        return []  # a result of a superseded command
    if result.status == "fenced":
        return []  # the command stopped before touching the backend; the command that fenced it decides
    if tracked:
        updated = entry.model_copy(
            update={
                "status": _RESULT_STATES[result.status],
                "attempts": result.attempts,
                "last_error": result.error,
                "updated_at": result.at,
                "detail": result.detail or entry.detail,
            }
        )
        status.resources[result.resource] = updated
        stores.status.put(result.tenant_id, status)
        if result.action is CommandAction.CREATE and updated.status is ResourceState.READY \
                and entry.status is not ResourceState.READY:
            _observe_ready(stores, result)
        emits = [_status_event(result.tenant_id, result.resource, updated, entry.status.value)]
        if result.action is CommandAction.DELETE and all(
            r.status in GONE for r in status.resources.values()
        ):
            tenant = stores.tenants.get(result.tenant_id)
            if tenant is not None:
                stores.tenants.put(
                    tenant.tenant_id, tenant.model_copy(update={"state": TenantState.DELETED, "updated_at": now})
                )
        return emits
    side = ResourceStatus(
        resource=result.resource,
        status=_RESULT_STATES[result.status],
        command_id=result.command_id,
        updated_at=result.at,
        attempts=result.attempts,
        last_error=result.error,
        detail=result.detail if result.status == "skipped" else {},
    )
    return [_status_event(result.tenant_id, f"{result.resource}:{result.action.value}", side, None)]


def command_for(
    tenant: TenantRecord, quota: QuotaRecord, entry: ResourceStatus, action: CommandAction, now: datetime
) -> ProvisioningCommand:
    """The command behind a status entry, rebuilt from the tenant's records (same id), for a re-run. A delete
    keeps the purge flag of the delete that started it (a re-run must neither lose nor invent a purge)."""
    extra: dict[str, object] | None = {"purge": tenant.purged} if action is CommandAction.DELETE else None
    (command,) = provisioning_commands(tenant, quota, action, entry.command_id, now, (entry.resource,), extra)
    return command.model_copy(update={"command_id": entry.command_id})


def command_fence(command: ProvisioningCommand, stores: TenantStores) -> str | None:
    """Why ``command`` must not run (any more), or None: the executor checks it when a command arrives and
    again before every attempt, so that a delete wins over creates still queued or backing off, and a
    command replayed from history (a new consumer group reads the whole topic) does nothing."""
    tenant = stores.tenants.get(command.tenant_id)
    if tenant is None:
        return "unknown tenant (a command from before this state, or of a tenant never recorded)"
    if command.generation != tenant.generation:
        return f"generation {command.generation} superseded by generation {tenant.generation}"
    if command.action is not CommandAction.DELETE and tenant.state is not TenantState.ACTIVE:
        return f"tenant is {tenant.state.value}: a delete wins over a {command.action.value}"
    if command.action in (CommandAction.CREATE, CommandAction.DELETE):
        status = stores.status.get(command.tenant_id)
        entry = status.resources.get(command.resource) if status else None
        if entry is None or entry.command_id != command.command_id:
            return "superseded by a later command for this resource"
        return None
    if command.action is CommandAction.UPDATE_QUOTA:
        quota = stores.quotas.get(command.tenant_id)
        if quota is None or command.spec.get("quota") != quota.limits.model_dump():
            return "a newer quota was set since"
    if command.action in USER_ACTIONS:
        return _user_fence(command, stores)
    return None


def _user_fence(command: ProvisioningCommand, stores: TenantStores) -> str | None:
    """A grant stops once its user is being deleted, a revoke once its user was created again; either stops
    when a later command for the same user and resource was issued."""
    raw = command.spec.get("user")
    user_id = raw.get("user_id") if isinstance(raw, dict) else None
    user = stores.users.get(user_key(command.tenant_id, user_id)) if isinstance(user_id, str) else None
    if user is None:
        return "unknown user"
    if command.action is CommandAction.CREATE_USER and user.state is not UserState.ACTIVE:
        return f"user is {user.state.value}: a delete_user wins over a create_user"
    if command.action is CommandAction.DELETE_USER and user.state is UserState.ACTIVE:
        return "the user was created again since"
    entry = user.resources.get(command.resource)
    # A record written before per-user statuses existed has no entry: its grant still runs.
    if entry is not None and entry.command_id != command.command_id:
        return "superseded by a later command for this user and resource"
    return None
