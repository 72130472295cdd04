"""OpenProject: one project per tenant, through API v3 (``/api/v3/projects``).

Authentication is OpenProject's API key scheme: HTTP Basic with the user ``apikey`` and the key as
password. The project is found by its identifier (``GET /api/v3/projects/{identifier}``, which OpenProject
resolves like an id), created with ``POST``, converged with ``PATCH`` and removed with ``DELETE``. A real
OpenProject deletes projects asynchronously, so a deleted project may still answer for a short while.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.provisioners._http import JsonHttp, basic_auth, path
from pipeline.provisioners.base import BaseProvisioner, DeleteResult, ResourcePlan, TenantSpec, VerifyResult, diff
from pipeline.provisioners.errors import PermanentError, TransientError
from pipeline.provisioners.naming import TenantNames
from pipeline.provisioners.tiers import TierConfig, TiersConfig

logger = logging.getLogger(__name__)

_API = "/api/v3"
_COMPARED = ("identifier", "name", "public", "active")


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
