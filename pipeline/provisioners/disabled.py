"""A backend switched off by configuration (Kubernetes under ``KUBERNETES_ENABLED=false``).

The executor reports its commands ``skipped`` with :attr:`DisabledProvisioner.reason` without calling it (see
``pipeline/executor.py``), so they are neither failed nor retried. :meth:`plan` is the real backend's (pure, no
connection): a dry run still shows what the backend would hold. Every other call raises a
:class:`~pipeline.provisioners.errors.PermanentError` with the reason, so that a caller that forgot to check
gets the same clear message instead of a connection error retried forever.
"""

from __future__ import annotations

from typing import Any, NoReturn

from pipeline.provisioners.base import (
    DeleteResult,
    Provisioner,
    ResourcePlan,
    TenantSpec,
    UserAccessResult,
    UserGrant,
    VerifyResult,
)
from pipeline.provisioners.errors import PermanentError
from pipeline.provisioners.tiers import Quota


class DisabledProvisioner:
    """Stands for ``planner``'s backend, which this worker must not talk to."""

    def __init__(self, planner: Provisioner, reason: str) -> None:
        self.resource = planner.resource
        self.data_bearing = planner.data_bearing
        self.reason = reason
        self._planner = planner

    def _refuse(self) -> NoReturn:
        raise PermanentError(self.reason, resource=self.resource)

    def plan(self, tenant: TenantSpec) -> ResourcePlan:
        return self._planner.plan(tenant)

    async def apply(self, tenant: TenantSpec) -> ResourcePlan:
        self._refuse()

    async def verify(self, tenant: TenantSpec) -> VerifyResult:
        self._refuse()

    async def delete(self, tenant: TenantSpec, purge: bool = False) -> DeleteResult:
        self._refuse()

    async def update_quota(self, tenant: TenantSpec, quota: Quota) -> Any:
        self._refuse()

    async def grant_user(self, tenant: TenantSpec, user: UserGrant) -> dict[str, Any]:
        self._refuse()

    async def revoke_user(self, tenant: TenantSpec, user: UserGrant) -> bool:
        self._refuse()

    async def verify_user(self, tenant: TenantSpec, user: UserGrant) -> UserAccessResult:
        self._refuse()

    async def aclose(self) -> None:
        await self._planner.aclose()
