"""A delete against a create whose backend call is in flight, with the real S3 server (SeaweedFS): the create's
bucket is made after the delete arrived, its response is lost, and its retry must not make it again after the
delete removed it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from minio import Minio

from pipeline.events.models import TenantCreated, TenantDeleted, Tier
from pipeline.provisioners.base import DeleteResult, ResourcePlan, TenantSpec, VerifyResult
from pipeline.provisioners.errors import TransientError
from pipeline.provisioners.s3 import S3Provisioner
from pipeline.tenants.logic import handle_tenant_created, handle_tenant_deleted
from tests.pipeline.provisioners.conftest import deleted_after, provisioner_fixture, settings_from
from tests.pipeline.tenants.conftest import NOW, quota_for_tier
from tests.pipeline.tenants.test_generations import fresh_stores
from tests.pipeline.tenants.test_replay_and_late_creates import STARTED, Backend, Worker

provisioner = provisioner_fixture(S3Provisioner)


class ResponseLost:
    """The real provisioner, whose first apply waits for ``gate``, creates the bucket and then fails as if the
    response had been lost (so the executor retries it)."""

    resource = "s3"
    data_bearing = True

    def __init__(self, real: S3Provisioner) -> None:
        self.real = real
        self.gate = asyncio.Event()
        self.applying = asyncio.Event()
        self.applies = 0

    def plan(self, tenant: TenantSpec) -> ResourcePlan:
        return self.real.plan(tenant)

    async def apply(self, tenant: TenantSpec) -> ResourcePlan:
        self.applies += 1
        self.applying.set()
        await self.gate.wait()
        plan = await self.real.apply(tenant)
        if self.applies == 1:
            raise TransientError("response lost")
        return plan

    async def verify(self, tenant: TenantSpec) -> VerifyResult:
        return await self.real.verify(tenant)

    async def delete(self, tenant: TenantSpec, purge: bool = False) -> DeleteResult:
        return await self.real.delete(tenant, purge=purge)

    async def aclose(self) -> None:
        return None


async def test_a_delete_wins_over_a_create_in_flight_at_the_real_server(
    provisioner: S3Provisioner, s3_service: dict[str, str], make_tenant: Callable[..., TenantSpec]
) -> None:
    settings = settings_from(s3_service)
    client = Minio(settings.minio_endpoint, access_key=settings.minio_access_key,
                   secret_key=settings.minio_secret_key.get_secret_value(), secure=settings.minio_secure)
    spec = make_tenant()
    bucket = spec.names().s3_bucket
    stores = fresh_stores()
    worker = Worker(stores, Backend())
    s3 = ResponseLost(provisioner)
    worker.provisioners["s3"] = s3  # type: ignore[assignment]

    async with deleted_after(provisioner, spec):
        created = TenantCreated(event_id=f"{spec.tenant_id}-created", tenant_id=spec.tenant_id,
                                occurred_at=STARTED + timedelta(seconds=1), name="late", tier=Tier.STANDARD,
                                owner_user_id="alice")
        worker.handle(handle_tenant_created(created, stores, quota_for_tier, NOW))
        await asyncio.wait_for(s3.applying.wait(), 30)
        deleted = TenantDeleted(event_id=f"{spec.tenant_id}-deleted", tenant_id=spec.tenant_id,
                                occurred_at=STARTED + timedelta(seconds=2), purge=True)
        worker.handle(handle_tenant_deleted(deleted, stores, NOW))
        s3.gate.set()
        await asyncio.wait_for(worker.scheduler.drain(), 60)

        assert s3.applies == 1
        assert not client.bucket_exists(bucket)
        status = stores.status.get(spec.tenant_id)
        assert status is not None and status.overall == "deleted"
        assert [r.resource for r in worker.fenced] == ["s3"]
