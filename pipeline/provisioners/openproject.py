"""OpenProject: one project per tenant, through API v3 (``/api/v3/projects``).

Authentication is OpenProject's API key scheme: HTTP Basic with the user ``apikey`` and the key as
password. The project is found by its identifier (``GET /api/v3/projects/{identifier}``, which OpenProject
resolves like an id), created with ``POST``, converged with ``PATCH`` and removed with ``DELETE``. A real
OpenProject deletes projects asynchronously, so a deleted project may still answer for a short while.

Per user (:class:`~pipeline.provisioners.base.UserAccess`): a membership of the user in the tenant's project
(``/api/v3/memberships``) with the role ``Reader``, ``Member`` or ``Project admin`` (the roles a fresh
OpenProject seeds) for a viewer, editor or admin. The principal is the OpenProject user whose ``login`` is
the user id, created (``POST /api/v3/users``, status ``active``, with the user's email) when there is none.
A revoke deletes the membership only: OpenProject users are global to the instance (one may be a member of
several tenants' projects), so the user itself stays.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pipeline.provisioners._http import JsonHttp, basic_auth, path
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
from pipeline.provisioners.errors import PermanentError, TransientError
from pipeline.provisioners.naming import TenantNames
from pipeline.provisioners.tiers import TierConfig, TiersConfig

logger = logging.getLogger(__name__)

_API = "/api/v3"
_COMPARED = ("identifier", "name", "public", "active")
#: The project role given to each user role.
USER_PROJECT_ROLES: dict[UserRole, str] = {
    UserRole.VIEWER: "Reader", UserRole.EDITOR: "Member", UserRole.ADMIN: "Project admin",
}


def _error_message(data: Any, fallback: str) -> str:
    if isinstance(data, dict):
        message = data.get("message")
        details = data.get("_embedded", {}).get("errors") if isinstance(data.get("_embedded"), dict) else None
        if isinstance(details, list):
            message = "; ".join(str(d.get("message")) for d in details if isinstance(d, dict)) or message
        if isinstance(message, str):
            return message
    return fallback[:300]


class OpenProjectProvisioner(BaseProvisioner):
    resource = "openproject"
    data_bearing = False

    def __init__(self, tiers: TiersConfig, url: str, api_key: str, *, timeout: float = 15.0) -> None:
        super().__init__(tiers)
        self._http = JsonHttp(
            url,
            resource=self.resource,
            headers={"Accept": "application/hal+json", **basic_auth("apikey", api_key)},
            timeout=timeout,
        )
        self.address = self._http.base_url

    async def aclose(self) -> None:
        await self._http.close()

    def _plan(self, tenant: TenantSpec, names: TenantNames, tier: TierConfig) -> tuple[dict[str, str], dict[str, Any]]:
        return (
            {"identifier": names.openproject_identifier},
            {
                "identifier": names.openproject_identifier,
                "name": tenant.name,
                "public": False,
                "active": True,
                "description": f"Workspace of tenant {names.tenant_id} ({tier.name} tier), managed by "
                               "the provisioning service.",
            },
        )

    async def _get(self, identifier: str) -> dict[str, Any] | None:
        response = await self._http.request("GET", path("projects", identifier, raw_prefix=_API),
                                            expect=(200, 404), what=f"get project {identifier}")
        if response.status == 404:
            return None
        if not isinstance(response.data, dict) or response.data.get("_type") != "Project":
            raise PermanentError(f"GET project {identifier}: not a Project: {response.text[:200]}")
        if response.data.get("identifier") != identifier:
            return None
        return response.data

    @staticmethod
    def _state(project: dict[str, Any]) -> dict[str, Any]:
        return {key: project.get(key) for key in _COMPARED}

    async def _apply(self, tenant: TenantSpec, plan: ResourcePlan) -> ResourcePlan:
        identifier = plan.names["identifier"]
        want = {key: plan.settings[key] for key in _COMPARED}
        project = await self._get(identifier)
        if project is None:
            body = {**want, "description": {"raw": plan.settings["description"]}}
            body.pop("active")
            response = await self._http.request("POST", path("projects", raw_prefix=_API), json_body=body,
                                                expect=(201, 200, 422), what=f"create project {identifier}")
            if response.status == 422:
                # Lost a race with another apply (identifier taken)? Then it exists now; anything else is final.
                project = await self._get(identifier)
                if project is None:
                    raise PermanentError(f"create project {identifier}: "
                                         f"{_error_message(response.data, response.text)}")
            else:
                logger.debug("created openproject project %s", identifier)
                project = response.data if isinstance(response.data, dict) else await self._get(identifier)
                if project is None:
                    raise TransientError(f"project {identifier} not found right after creation")
        changes = {d.path: d.expected for d in diff(want, self._state(project))}
        changes.pop("identifier", None)
        if changes:
            await self._http.request("PATCH", path("projects", str(project["id"]), raw_prefix=_API),
                                     json_body=changes, expect=(200,), what=f"update project {identifier}")
            logger.debug("updated openproject project %s: %s", identifier, sorted(changes))
        return plan.model_copy(update={"settings": {**plan.settings, "id": project.get("id")}})

    async def _verify(self, tenant: TenantSpec, plan: ResourcePlan) -> VerifyResult:
        identifier = plan.names["identifier"]
        project = await self._get(identifier)
        if project is None:
            return self._verify_result(plan, exists=False, missing=[f"project {identifier}"])
        want = {key: plan.settings[key] for key in _COMPARED}
        return self._verify_result(plan, exists=True, differences=diff(want, self._state(project)))

    async def _delete(self, tenant: TenantSpec, plan: ResourcePlan, purge: bool) -> DeleteResult:
        identifier = plan.names["identifier"]
        item = f"project {identifier}"
        project = await self._get(identifier)
        if project is None:
            return self._delete_result(plan, absent=[item])
        await self._http.request("DELETE", path("projects", str(project["id"]), raw_prefix=_API),
                                 expect=(204, 200, 202, 404), what=f"delete project {identifier}")
        return self._delete_result(plan, deleted=[item])

    # -- per-user access ----------------------------------------------------------------------------------------

    async def _elements(self, collection: str, filters: list[dict[str, Any]] | None, what: str) -> list[Any]:
        params = {"filters": json.dumps(filters)} if filters is not None else None
        response = await self._http.request("GET", path(collection, raw_prefix=_API), params=params, what=what)
        embedded = response.data.get("_embedded") if isinstance(response.data, dict) else None
        elements = embedded.get("elements") if isinstance(embedded, dict) else None
        if not isinstance(elements, list):
            raise PermanentError(f"{what}: not a collection: {response.text[:200]}")
        return [e for e in elements if isinstance(e, dict)]

    async def _principal(self, login: str) -> dict[str, Any] | None:
        users = await self._elements("users", [{"login": {"operator": "=", "values": [login]}}],
                                     f"find user {login}")
        return next((u for u in users if u.get("login") == login), None)

    async def _role_href(self, name: str) -> str:
        for role in await self._elements("roles", None, "list roles"):
            if role.get("name") == name:
                return str(role["_links"]["self"]["href"])
        raise PermanentError(f"OpenProject has no role named {name!r}")

    async def _user_membership(self, identifier: str, login: str) -> dict[str, Any] | None:
        """The membership of user ``login`` in project ``identifier`` (None: no project, user or membership)."""
        project = await self._get(identifier)
        principal = await self._principal(login) if project is not None else None
        return await self._membership(project["id"], principal["id"]) if project and principal else None

    async def _membership(self, project_id: Any, principal_id: Any) -> dict[str, Any] | None:
        found = await self._elements("memberships", [
            {"project": {"operator": "=", "values": [str(project_id)]}},
            {"principal": {"operator": "=", "values": [str(principal_id)]}},
        ], f"find membership of user {principal_id} in project {project_id}")
        return found[0] if found else None

    @staticmethod
    def _role_hrefs(membership: dict[str, Any]) -> list[str]:
        roles = membership.get("_links", {}).get("roles") or []
        return sorted(str(r.get("href")) for r in roles if isinstance(r, dict))

    async def _create_principal(self, user: UserGrant) -> dict[str, Any]:
        if user.email is None:
            raise PermanentError(f"OpenProject user {user.user_id} does not exist and no email is known to create it")
        body = {"login": user.user_id, "email": user.email, "firstName": user.user_id.split("@", 1)[0][:64],
                "lastName": "(platform user)", "status": "active"}
        response = await self._http.request("POST", path("users", raw_prefix=_API), json_body=body,
                                            expect=(201, 200, 422), what=f"create user {user.user_id}")
        if response.status == 422:  # created concurrently? then it exists now; anything else is final
            principal = await self._principal(user.user_id)
            if principal is None:
                raise PermanentError(f"create user {user.user_id}: {_error_message(response.data, response.text)}")
            return principal
        if not isinstance(response.data, dict):
            raise TransientError(f"user {user.user_id} created without a body")
        return response.data

    async def grant_user(self, tenant: TenantSpec, user: UserGrant) -> dict[str, Any]:
        identifier = tenant.names().openproject_identifier

        async def run() -> dict[str, Any]:
            project = await self._get(identifier)
            if project is None:
                # The tenant's create command may still be running; the executor retries with backoff.
                raise TransientError(f"project {identifier} does not exist (yet)", resource=self.resource)
            principal = await self._principal(user.user_id) or await self._create_principal(user)
            role_name = USER_PROJECT_ROLES[user.role]
            role = await self._role_href(role_name)
            membership = await self._membership(project["id"], principal["id"])
            links = {"roles": [{"href": role}]}
            if membership is None:
                body = {"_links": {"project": {"href": f"{_API}/projects/{project['id']}"},
                                   "principal": {"href": f"{_API}/users/{principal['id']}"}, **links}}
                await self._http.request("POST", path("memberships", raw_prefix=_API), json_body=body,
                                         expect=(201, 200), what=f"add {user.user_id} to project {identifier}")
            elif self._role_hrefs(membership) != [role]:
                await self._http.request("PATCH", path("memberships", str(membership["id"]), raw_prefix=_API),
                                         json_body={"_links": links}, expect=(200,),
                                         what=f"set the role of {user.user_id} in project {identifier}")
            return {"project": identifier, "principal": principal["id"], "role": role_name}

        return await self._run("grant_user", tenant, run)

    async def revoke_user(self, tenant: TenantSpec, user: UserGrant) -> bool:
        identifier = tenant.names().openproject_identifier

        async def run() -> bool:
            membership = await self._user_membership(identifier, user.user_id)
            if membership is None:
                return False
            await self._http.request("DELETE", path("memberships", str(membership["id"]), raw_prefix=_API),
                                     expect=(204, 200, 404), what=f"remove {user.user_id} from project {identifier}")
            return True

        return await self._run("revoke_user", tenant, run)

    async def verify_user(self, tenant: TenantSpec, user: UserGrant) -> UserAccessResult:
        names = tenant.names()
        identifier = names.openproject_identifier

        async def run() -> UserAccessResult:
            result = UserAccessResult(resource=self.resource, tenant_id=names.tenant_id, user_id=user.user_id)
            label = f"membership of {user.user_id} in project {identifier}"
            membership = await self._user_membership(identifier, user.user_id)
            if membership is None:
                result.missing.append(label)
                return result
            role = await self._role_href(USER_PROJECT_ROLES[user.role])
            if self._role_hrefs(membership) != [role]:
                result.differences.append(Difference(path=label, expected=[role],
                                                     actual=self._role_hrefs(membership)))
            return result

        return await self._run("verify_user", tenant, run)
