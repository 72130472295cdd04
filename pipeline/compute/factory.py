"""Building the worker's compute runtime from the settings (catalogs, engine client, Kubernetes provider,
failover, access and idle policies)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pipeline.compute.access import AccessConfig
from pipeline.compute.allocation import FailoverPolicy
from pipeline.compute.backend import BackendRouter, ComputeBackend
from pipeline.compute.catalog import PACKAGED_CATALOG_DIR, Offer, OfferBook, load_catalogs
from pipeline.compute.engine_client import DerivativesEngineClient
from pipeline.compute.kubernetes_provider import KubernetesComputeProvider
from pipeline.compute.lifecycle import (
    ComputeEvent,
    IdlePolicy,
)
from pipeline.compute.optimizer import TenantComputeSettings, TenantPolicy
from pipeline.compute.quote_cache import CachedQuotes
from pipeline.compute.record_store import RecordSender, RecordTable, TopicRecordStore
from pipeline.compute.runtime import ComputeRuntime, month_start, status_event
from pipeline.compute.service import ComputeService, QuotaLookup
from pipeline.compute.vault import AccessVault
from pipeline.config import Settings
from pipeline.events.models import ProvisioningStatusEvent
from pipeline.shared_cache import SharedCache

StatusSender = Callable[[ProvisioningStatusEvent], Awaitable[None]]


def catalog_paths(settings: Settings) -> list[Path]:
    """Every ``<provider>_vms.v8.csv`` of the catalog folder (default: the packaged copies), then the
    extra catalogs."""
    folder = settings.compute_catalog_dir or PACKAGED_CATALOG_DIR
    return sorted(folder.glob("*_vms.v8.csv")) + list(settings.compute_extra_catalogs)


def tenant_policy(settings: Settings, tenant_id: str, quota_gpus: int | None) -> TenantPolicy:
    """The tenant's policy: its configured entry (or ``"*"``) capped by its quota's GPUs."""
    policies = settings.compute_tenant_policies
    configured = policies.get(tenant_id) or policies.get("*") or TenantComputeSettings()
    return configured.policy(tenant_id, quota_gpus)


def build_runtime(
    settings: Settings,
    *,
    table: RecordTable,
    send_record: RecordSender,
    send_status: StatusSender,
    quota_gpus: Callable[[str], int | None],
    quotas: QuotaLookup,
    quarantined: Callable[[str], Sequence[str]] | None = None,
    engine: DerivativesEngineClient | None = None,
    kubernetes: ComputeBackend | None = None,
    offers: list[Offer] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    shared_cache: SharedCache | None = None,
) -> ComputeRuntime:
    """The worker's runtime from settings (``engine``/``kubernetes``/``offers`` override what the
    settings would build, for tests). ``shared_cache``: the workers' cache (built by the composition root,
    :mod:`pipeline.worker`) that the engine's quotes go through; ``None``: every quote asks the engine."""
    engine = engine or DerivativesEngineClient(
        settings.derivatives_engine_url,
        timeout_s=settings.compute_engine_timeout_seconds,
        allocate_timeout_s=settings.compute_allocate_timeout_seconds,
        api_token=settings.derivatives_engine_api_token.get_secret_value()
        if settings.derivatives_engine_api_token else None,
    )
    k8s_config = settings.compute_kubernetes
    by_provider: dict[str, ComputeBackend] = {}
    book = OfferBook(offers if offers is not None else load_catalogs(catalog_paths(settings)))
    # Under KUBERNETES_ENABLED=false the in-house provider is neither offered nor given a backend: no request can
    # land on a cluster this worker must not talk to (the worker logs why once, at start).
    if settings.kubernetes_enabled:
        if kubernetes is None:
            kubernetes = KubernetesComputeProvider(
                k8s_config, kubeconfig=str(settings.kubeconfig) if settings.kubeconfig else None
            )
        by_provider[k8s_config.provider] = kubernetes
        book.merge(k8s_config.offers())
    period_start = month_start if settings.compute_budget_period == "month" else None
    store = TopicRecordStore(
        table, send_record, finished_since=lambda: period_start(clock()) if period_start is not None else None
    )

    async def announce(event: ComputeEvent) -> None:
        await store.flush()  # the record is in the table's topic before the event says so
        await send_status(status_event(event, store.get(event.request_id)))

    failover = FailoverPolicy(
        max_attempts=settings.compute_max_attempts,
        deadline_s=settings.compute_deadline_seconds,
        poll_interval_s=settings.compute_poll_interval_seconds,
        provisioning_timeout_s=settings.compute_provisioning_timeout_seconds,
    )
    service = ComputeService(
        book=book,
        backends=BackendRouter(engine, by_provider),
        store=store,
        policies=lambda tenant_id: tenant_policy(settings, tenant_id, quota_gpus(tenant_id)),
        failover=failover,
        access_config=AccessConfig(
            ssh_user=settings.compute_ssh_user,
            jupyter_url_template=settings.compute_jupyter_url_template,
            monitoring_url_template=settings.compute_monitoring_url_template,
        ),
        idle=IdlePolicy(warning_grace_s=settings.compute_idle_warning_seconds),
        events=announce,
        clock=clock,
        period_start=period_start,
        quotas=quotas,
        quarantined=quarantined,
    )
    stale_after = failover.deadline_s + failover.release_timeout_s * failover.release_retries + 120.0
    return ComputeRuntime(
        service,
        store,
        AccessVault(settings.compute_access_claim_ttl_seconds),
        engine=engine,
        quotes=CachedQuotes(engine, shared_cache, settings.shared_cache_quote_ttl_seconds, namespace=engine.base_url)
        if shared_cache is not None else engine,
        quote_on_request=settings.compute_quote_on_request,
        closers=(engine.close,),
        stale_after_s=stale_after,
        activity_step_s=min(30.0, settings.compute_idle_warning_seconds / 4),
        provision_wait_s=settings.compute_provision_wait_seconds,
    )
