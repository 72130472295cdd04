"""Pulsar: a tenant allowed on the cluster(s), and its namespace ``<tenant>/default`` with the tier's policies.

Everything goes through the admin REST API (``/admin/v2``). The allowed clusters are the configured ones
or, by default, every cluster the broker lists at ``/admin/v2/clusters``. Policies set on the namespace:
retention, the ``destination_storage`` backlog quota and the message TTL.

Per user (:class:`~pipeline.provisioners.base.UserAccess`): the namespace permission of the Pulsar role named
exactly like the user id (``/admin/v2/namespaces/{tenant}/{namespace}/permissions/{user_id}``): ``consume``
for a viewer, ``produce`` and ``consume`` for an editor or an admin. Pulsar has no namespace-level admin
action (administration is the tenant's ``adminRoles``, the service's own roles); ``functions``/``packages``
are left out since the service runs no functions worker for tenants. A broker enforces these only with
``authorizationEnabled=true`` and an authentication provider that maps the user's credential to this role;
it stores them either way (the local standalone runs without, and the tests read them back).

The namespace is not treated as data-bearing (the issue lists keyspace, bucket and index): ``delete``
removes its topics, the namespace, and the tenant if no other namespace was added to it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from typing import Any

from pipeline.provisioners._http import HttpResponse, JsonHttp, path
from pipeline.provisioners.base import (
    BaseProvisioner,
    DeleteResult,
    Difference,
    ResourcePlan,
    TenantSpec,
    UserAccessResult,
    UserGrant,
    UserRole,
    VerifyResult,
    diff,
)
from pipeline.provisioners.errors import TransientError
from pipeline.provisioners.naming import TenantNames
from pipeline.provisioners.tiers import TierConfig, TiersConfig

logger = logging.getLogger(__name__)

_ADMIN = "/admin/v2"
_BACKLOG_TYPE = "destination_storage"
#: Namespace actions granted per user role (sorted, as the broker lists them).
USER_ACTIONS: dict[UserRole, list[str]] = {
    UserRole.VIEWER: ["consume"],
    UserRole.EDITOR: ["consume", "produce"],
    UserRole.ADMIN: ["consume", "produce"],
}


def _shrinks(want: int, have: Any) -> bool:
    """Whether a retention limit goes down (-1 is unlimited)."""
    if not isinstance(have, int) or want == -1:
        return False
    return have == -1 or want < have


def _names(response: HttpResponse) -> list[str]:
    if response.status != 200 or not isinstance(response.data, list):
        return []
    return [str(item) for item in response.data]


class PulsarProvisioner(BaseProvisioner):
    resource = "pulsar"
    data_bearing = False

    def __init__(
        self,
        tiers: TiersConfig,
        admin_url: str,
        *,
        clusters: Sequence[str] | None = None,
        admin_roles: Sequence[str] = (),
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 15.0,
    ) -> None:
        super().__init__(tiers)
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._http = JsonHttp(admin_url, resource=self.resource, headers=headers, timeout=timeout,
                              ssl_context=ssl_context)
        self._clusters = sorted(clusters) if clusters else None
        self.address = self._http.base_url
        self._admin_roles = sorted(admin_roles)

    async def aclose(self) -> None:
        await self._http.close()

    # -- plan ---------------------------------------------------------------------------------------------------

    def _plan(self, tenant: TenantSpec, names: TenantNames, tier: TierConfig) -> tuple[dict[str, str], dict[str, Any]]:
        pulsar = tier.pulsar
        quota = pulsar.backlog_quota
        return (
            {"tenant": names.pulsar_tenant, "namespace": names.pulsar_namespace},
            {
                "allowed_clusters": self._clusters,  # None: every cluster listed by /admin/v2/clusters
                "admin_roles": self._admin_roles,
                "retention": {
                    "retentionTimeInMinutes": pulsar.retention_minutes,
                    "retentionSizeInMB": pulsar.retention_size_mb,
                },
                "backlog_quota": {
                    _BACKLOG_TYPE: {
                        "limitSize": quota.limit_size_mb * 1024 * 1024,
                        "limitTime": quota.limit_time_seconds if quota.limit_time_seconds is not None else -1,
                        "policy": quota.policy,
                    }
                },
                "message_ttl_seconds": pulsar.message_ttl_seconds,
            },
        )

    # -- helpers ------------------------------------------------------------------------------------------------

    async def _allowed_clusters(self) -> list[str]:
        if self._clusters is not None:
            return self._clusters
        response = await self._http.request("GET", f"{_ADMIN}/clusters", what="list clusters")
        clusters = sorted(c for c in response.data or [] if isinstance(c, str) and c != "global")
        if not clusters:
            raise TransientError("the broker lists no clusters at /admin/v2/clusters", resource=self.resource)
        return clusters

    def _ns_path(self, namespace: str, *rest: str) -> str:
        tenant, local = namespace.split("/", 1)
        return path("namespaces", tenant, local, *rest, raw_prefix=_ADMIN)

    async def _get_tenant(self, tenant: str) -> dict[str, Any] | None:
        response = await self._http.request("GET", path("tenants", tenant, raw_prefix=_ADMIN), expect=(200, 404))
        return response.data if response.status == 200 and isinstance(response.data, dict) else None

    async def _namespace_exists(self, tenant: str, namespace: str) -> bool:
        response = await self._http.request("GET", path("namespaces", tenant, raw_prefix=_ADMIN), expect=(200, 404))
        return response.status == 200 and namespace in (response.data or [])

    async def _policies(self, namespace: str) -> dict[str, Any]:
        retention, backlog, ttl = await asyncio.gather(
            self._http.request("GET", self._ns_path(namespace, "retention")),
            self._http.request("GET", self._ns_path(namespace, "backlogQuotaMap")),
            self._http.request("GET", self._ns_path(namespace, "messageTTL")),
        )
        backlog_map = backlog.data if isinstance(backlog.data, dict) else {}
        quota = backlog_map.get(_BACKLOG_TYPE) or {}
        return {
            "retention": {
                key: (retention.data or {}).get(key) for key in ("retentionTimeInMinutes", "retentionSizeInMB")
            },
            "backlog_quota": {
                _BACKLOG_TYPE: {key: quota.get(key) for key in ("limitSize", "limitTime", "policy")}
            },
            "message_ttl_seconds": ttl.data if isinstance(ttl.data, int) else None,
        }

    # -- apply --------------------------------------------------------------------------------------------------

    async def _apply(self, tenant: TenantSpec, plan: ResourcePlan) -> ResourcePlan:
        tenant_name, namespace = plan.names["tenant"], plan.names["namespace"]
        clusters = await self._allowed_clusters()
        tenant_info = {"adminRoles": self._admin_roles, "allowedClusters": clusters}
        current = await self._get_tenant(tenant_name)
        tenant_path = path("tenants", tenant_name, raw_prefix=_ADMIN)
        if current is None:
            await self._http.request("PUT", tenant_path, json_body=tenant_info, expect=(204, 200, 409),
                                     what=f"create tenant {tenant_name}")
            logger.debug("created pulsar tenant %s on %s", tenant_name, clusters)
        elif sorted(current.get("allowedClusters") or []) != clusters or sorted(
            current.get("adminRoles") or []
        ) != self._admin_roles:
            await self._http.request("POST", tenant_path, json_body=tenant_info, expect=(204, 200),
                                     what=f"update tenant {tenant_name}")

        if not await self._namespace_exists(tenant_name, namespace):
            await self._http.request("PUT", self._ns_path(namespace), json_body={}, expect=(204, 200, 409),
                                     what=f"create namespace {namespace}")
            logger.debug("created pulsar namespace %s", namespace)

        have = await self._policies(namespace)
        want = plan.settings
        retention_changes = bool(diff(want["retention"], have["retention"]))
        backlog_changes = bool(diff(want["backlog_quota"], have["backlog_quota"]))
        # Pulsar requires backlog quota < retention at every step: when retention shrinks, lower the quota first.
        shrinking = _shrinks(want["retention"]["retentionSizeInMB"], have["retention"]["retentionSizeInMB"]) or (
            _shrinks(want["retention"]["retentionTimeInMinutes"], have["retention"]["retentionTimeInMinutes"])
        )
        steps = ["backlog", "retention"] if shrinking else ["retention", "backlog"]
        for step in steps:
            if step == "retention" and retention_changes:
                await self._http.request("POST", self._ns_path(namespace, "retention"), json_body=want["retention"],
                                         expect=(204, 200), what=f"set retention of {namespace}")
            if step == "backlog" and backlog_changes:
                await self._http.request(
                    "POST", self._ns_path(namespace, "backlogQuota"),
                    json_body=want["backlog_quota"][_BACKLOG_TYPE], params={"backlogQuotaType": _BACKLOG_TYPE},
                    expect=(204, 200), what=f"set backlog quota of {namespace}",
                )
        if have["message_ttl_seconds"] != want["message_ttl_seconds"]:
            await self._http.request("POST", self._ns_path(namespace, "messageTTL"),
                                     json_body=want["message_ttl_seconds"], expect=(204, 200),
                                     what=f"set message TTL of {namespace}")
        return plan.model_copy(update={"settings": {**want, "allowed_clusters": clusters}})

    # -- verify -------------------------------------------------------------------------------------------------

    async def _verify(self, tenant: TenantSpec, plan: ResourcePlan) -> VerifyResult:
        tenant_name, namespace = plan.names["tenant"], plan.names["namespace"]
        current = await self._get_tenant(tenant_name)
        if current is None:
            return self._verify_result(plan, exists=False,
                                       missing=[f"tenant {tenant_name}", f"namespace {namespace}"])
        if not await self._namespace_exists(tenant_name, namespace):
            return self._verify_result(plan, exists=False, missing=[f"namespace {namespace}"])
        want = dict(plan.settings)
        want["allowed_clusters"] = await self._allowed_clusters()
        have = await self._policies(namespace)
        have["allowed_clusters"] = sorted(current.get("allowedClusters") or [])
        have["admin_roles"] = sorted(current.get("adminRoles") or [])
        return self._verify_result(plan, exists=True, differences=diff(want, have))

    # -- delete -------------------------------------------------------------------------------------------------

    async def _delete_topics(self, namespace: str) -> None:
        tenant, local = namespace.split("/", 1)
        partitioned = await self._http.request("GET", path("persistent", tenant, local, "partitioned",
                                                           raw_prefix=_ADMIN), expect=(200, 404))
        for topic in _names(partitioned):
            name = str(topic).rsplit("/", 1)[-1]
            await self._http.request("DELETE", path("persistent", tenant, local, name, "partitions",
                                                    raw_prefix=_ADMIN), params={"force": "true"},
                                     expect=(204, 200, 404), what=f"delete topic {topic}")
        topics = await self._http.request("GET", self._ns_path(namespace, "topics"), expect=(200, 404))
        for topic in _names(topics):
            domain, _, rest = str(topic).partition("://")
            name = rest.rsplit("/", 1)[-1]
            if name.startswith("__") or domain not in {"persistent", "non-persistent"}:
                continue  # system topics go with the namespace
            await self._http.request("DELETE", path(domain, tenant, local, name, raw_prefix=_ADMIN),
                                     params={"force": "true"}, expect=(204, 200, 404),
                                     what=f"delete topic {topic}")

    async def _delete(self, tenant: TenantSpec, plan: ResourcePlan, purge: bool) -> DeleteResult:
        tenant_name, namespace = plan.names["tenant"], plan.names["namespace"]
        result = self._delete_result(plan)
        if await self._get_tenant(tenant_name) is None:
            result.absent += [f"namespace {namespace}", f"tenant {tenant_name}"]
            return result
        if await self._namespace_exists(tenant_name, namespace):
            response = await self._http.request("DELETE", self._ns_path(namespace), expect=(204, 200, 404, 409))
            if response.status == 409 and not purge:  # it has topics, which hold retained messages
                result.kept += [f"namespace {namespace}", f"tenant {tenant_name}"]
                return result
            if response.status == 409:  # not empty: remove its topics, then the namespace
                await self._delete_topics(namespace)
                await self._http.request("DELETE", self._ns_path(namespace), expect=(204, 200, 404),
                                         what=f"delete namespace {namespace}")
            result.deleted.append(f"namespace {namespace}")
        else:
            result.absent.append(f"namespace {namespace}")
        remaining = await self._http.request("GET", path("namespaces", tenant_name, raw_prefix=_ADMIN),
                                             expect=(200, 404))
        if remaining.status == 200 and remaining.data:
            logger.warning("pulsar tenant %s keeps namespaces %s not created by the provisioner",
                           tenant_name, remaining.data)
            result.kept.append(f"tenant {tenant_name}")
            return result
        await self._http.request("DELETE", path("tenants", tenant_name, raw_prefix=_ADMIN),
                                 expect=(204, 200, 404), what=f"delete tenant {tenant_name}")
        result.deleted.append(f"tenant {tenant_name}")
        return result


    # -- per-user access ----------------------------------------------------------------------------------------

    async def _permissions(self, namespace: str) -> dict[str, Any] | None:
        """Role -> actions of the namespace, or None when the namespace does not exist."""
        response = await self._http.request("GET", self._ns_path(namespace, "permissions"), expect=(200, 404),
                                            what=f"get permissions of {namespace}")
        if response.status == 404:
            return None
        return response.data if isinstance(response.data, dict) else {}

    async def grant_user(self, tenant: TenantSpec, user: UserGrant) -> dict[str, Any]:
        namespace = tenant.names().pulsar_namespace
        actions = USER_ACTIONS[user.role]

        async def run() -> dict[str, Any]:
            current = await self._permissions(namespace)
            if current is None:
                # The tenant's create command may still be running; the executor retries with backoff.
                raise TransientError(f"namespace {namespace} does not exist (yet)", resource=self.resource)
            if sorted(current.get(user.user_id) or []) != actions:
                # POST replaces the role's actions (a demoted user loses produce).
                await self._http.request("POST", self._ns_path(namespace, "permissions", user.user_id),
                                         json_body=actions, expect=(204, 200),
                                         what=f"grant {actions} on {namespace} to {user.user_id}")
            return {"namespace": namespace, "role": user.user_id, "actions": actions}

        return await self._run("grant_user", tenant, run)

    async def revoke_user(self, tenant: TenantSpec, user: UserGrant) -> bool:
        namespace = tenant.names().pulsar_namespace

        async def run() -> bool:
            current = await self._permissions(namespace)
            if current is None or user.user_id not in current:
                return False
            await self._http.request("DELETE", self._ns_path(namespace, "permissions", user.user_id),
                                     expect=(204, 200, 404), what=f"revoke {user.user_id} on {namespace}")
            return True

        return await self._run("revoke_user", tenant, run)

    async def verify_user(self, tenant: TenantSpec, user: UserGrant) -> UserAccessResult:
        names = tenant.names()
        namespace = names.pulsar_namespace

        async def run() -> UserAccessResult:
            result = UserAccessResult(resource=self.resource, tenant_id=names.tenant_id, user_id=user.user_id)
            current = await self._permissions(namespace)
            label = f"permission of {user.user_id} on {namespace}"
            if current is None or user.user_id not in current:
                result.missing.append(label)
            elif sorted(current[user.user_id] or []) != USER_ACTIONS[user.role]:
                result.differences.append(Difference(path=label, expected=USER_ACTIONS[user.role],
                                                     actual=sorted(current[user.user_id] or [])))
            return result

        return await self._run("verify_user", tenant, run)
