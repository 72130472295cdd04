"""``python -m pipeline compute ...`` and ``tenants ...``: the REST API from the command line.

The API's address and the bearer token come from the settings (``PROVISIONING_API_URL``,
``PROVISIONING_TOKEN``). Humans get tables; ``--json`` prints the API's answer as it came, for scripts.
Exit status: 0 done, 1 the API refused or failed (its error on stderr), 2 bad usage or no token.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from pipeline.compute.request import MAX_DURATION_HOURS, ComputeRequest
from pipeline.compute.request_ids import valid_idempotency_key
from pipeline.config import Settings
from pipeline.rest_client import ApiError, Reply, RestClient

F = TypeVar("F", bound=Callable[..., Any])
# The server waits at most this long for an allocation before answering 202 (web.compute.models.MAX_WAIT_SECONDS).
MAX_WAIT_SECONDS = 600.0


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer (for scripts).")(func)


def client() -> RestClient:
    """The REST client of the settings; a usage error when no token is configured."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise click.UsageError(f"invalid settings: {exc}") from None
    if settings.provisioning_token is None:
        raise click.UsageError(
            "PROVISIONING_TOKEN is not set (export PROVISIONING_TOKEN=$(python -m pipeline dev-token))"
        )
    return RestClient(settings.provisioning_api_url, settings.provisioning_token.get_secret_value())


def call(method: str, path: str, **kwargs: Any) -> Reply:
    try:
        return client().call(method, path, **kwargs)
    except ApiError as exc:
        where = f"HTTP {exc.status}" if exc.status else "error"
        errors = exc.details.get("errors")
        extra = f"\n{json.dumps(errors, indent=2)}" if errors else ""
        click.echo(f"{where}: {exc.code}: {exc.message}{extra}", err=True)
        raise SystemExit(1) from None


# -- output ---------------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.0f}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """``rows`` as an aligned text table; ``columns`` are (header, key) pairs."""
    cells = [[header.upper() for header, _ in columns]]
    cells += [[_cell(row.get(key)) for _, key in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells)


def fields(record: dict[str, Any], keys: Sequence[tuple[str, str]]) -> str:
    """One record as ``label: value`` lines."""
    width = max(len(label) for label, _ in keys)
    return "\n".join(f"{label.ljust(width)}  {_cell(record.get(key))}" for label, key in keys)


def show(reply: Reply, as_json: bool, human: Callable[[Any], str]) -> None:
    click.echo(json.dumps(reply.body, indent=2) if as_json else human(reply.body))


# -- compute --------------------------------------------------------------------------------------------


class GpuType(click.ParamType):
    """``TYPE[:COUNT]`` as SkyPilot writes it (``H100:4``); the count defaults to 1."""

    name = "TYPE[:COUNT]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        kind, _, count = str(value).partition(":")
        try:
            number = int(count) if count else 1
        except ValueError:
            self.fail(f"{value!r}: the count after ':' must be a whole number", param, ctx)
        if not kind or not 1 <= number <= 64:
            self.fail(f"{value!r}: expected TYPE[:COUNT] with a count from 1 to 64 (H100:4)", param, ctx)
        return {"type": kind, "count": number}


def _offer(record: dict[str, Any]) -> dict[str, Any]:
    offer = record.get("offer") or {}
    return {**record, "provider": record.get("provider") or offer.get("provider"),
            "region": record.get("region") or offer.get("region"),
            "instance_type": record.get("instance_type") or offer.get("instance_type")}


COMPUTE_FIELDS = (("request", "request_id"), ("tenant", "tenant_id"), ("state", "state"),
                  ("provider", "provider"), ("region", "region"), ("instance", "instance_type"),
                  ("price/h", "price_per_hour"), ("running since", "running_since"), ("ends at", "ends_at"))


def _compute_human(body: dict[str, Any]) -> str:
    record = _offer(body)
    if isinstance(record.get("attempts"), list):
        record["attempts"] = len(record["attempts"])
    lines = fields(record, (*COMPUTE_FIELDS, ("attempts", "attempts")))
    if record.get("error"):
        lines += f"\nerror          {record['error']}"
    access = body.get("access")
    if isinstance(access, dict) and access.get("ssh_private_key"):
        port = access.get("ssh_port")
        ssh = f"ssh {access.get('ssh_user')}@{access.get('ssh_host')}" + (f" -p {port}" if port else "")
        lines += ("\n\nAccess details (shown once, not stored):\n" + fields({**access, "ssh": ssh}, (
            ("ssh", "ssh"), ("jupyter", "jupyter_url"), ("monitoring", "monitoring_url"))))
        lines += "\n\n" + str(access["ssh_private_key"]).rstrip()
    elif body.get("message"):
        lines += f"\n\n{body['message']}"
    return lines


def _capacity_human(body: dict[str, Any]) -> str:
    out = table(body.get("rows", []), (("provider", "provider"), ("region", "region"), ("type", "resource_type"),
                                       ("available", "available_instances"), ("gpus", "available_gpus"),
                                       ("vcpus", "available_vcpus"), ("allocated", "allocated_instances")))
    tenant = body.get("tenant")
    if isinstance(tenant, dict):
        out += "\n\n" + fields(tenant, (("tenant", "tenant_id"), ("gpus in use", "gpus_in_use"),
                                        ("gpus remaining", "gpus_remaining"), ("spent usd", "spent_usd"),
                                        ("budget remaining", "budget_remaining_usd")))
    return out


@click.group()
def compute() -> None:
    """Compute requests over the REST API (PROVISIONING_API_URL, PROVISIONING_TOKEN)."""


def request_options(func: F) -> F:
    """The options describing a compute request (``launch`` and ``quote`` take the same)."""
    options = [
        click.option("--tenant", required=True, help="The tenant the compute is for."),
        click.option("--gpu", type=GpuType(), default=None, help="Accelerator and count, e.g. H100:4."),
        click.option("--cpus", type=click.FloatRange(0, 4096), default=0.0, show_default=True, help="Minimum vCPUs."),
        click.option("--memory", type=click.FloatRange(0, 65536), default=0.0, show_default=True,
                     help="Minimum GiB."),
        click.option("--hours", type=click.FloatRange(0, MAX_DURATION_HOURS, min_open=True), required=True,
                     help="How long it is needed."),
        click.option("--spot", is_flag=True, help="Allow spot (preemptible) offers."),
        click.option("--max-price", type=click.FloatRange(0, 1e9, min_open=True), default=None,
                     help="Highest hourly price (USD, after discounts)."),
        click.option("--region", "regions", multiple=True, help="Allowed region (repeatable; default: any)."),
        click.option("--provider", "providers", multiple=True, help="Allowed provider (repeatable; default: any)."),
        click.option("--purpose", default="other", show_default=True,
                     type=click.Choice(["training", "fine-tuning", "inference", "notebook", "batch", "development",
                                        "other"])),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def request_body(tenant: str, gpu: dict[str, Any] | None, cpus: float, memory: float, hours: float, spot: bool,
                 max_price: float | None, regions: tuple[str, ...], providers: tuple[str, ...],
                 purpose: str) -> dict[str, Any]:
    """The JSON body of the options, checked here so a mistake is named before anything is sent (the server
    checks it again)."""
    body: dict[str, Any] = {
        "tenant_id": tenant, "resources": {"gpu": gpu, "vcpus": cpus, "memory_gib": memory},
        "duration_hours": hours, "spot_allowed": spot, "max_price_per_hour": max_price, "purpose": purpose,
        "regions": list(regions) or None, "providers": list(providers) or None,
    }
    try:
        ComputeRequest.model_validate(body)
    except ValidationError as exc:
        raise click.UsageError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    return body


@compute.command()
@request_options
@click.option("--name", "request_name", default=None,
              help="Your name for the request (lower case, digits, '-'): its id becomes TENANT.NAME, and running "
              "the same command again returns that request instead of allocating again.")
@click.option("--idempotency-key", default=None,
              help="Sent as the Idempotency-Key header: the same key and request again return the same request "
              "(safe to retry after a timeout).")
@click.option("--wait", type=click.FloatRange(0, MAX_WAIT_SECONDS), default=None,
              help="Seconds to wait for it to run before returning (default: the server's).")
@json_option
def launch(tenant: str, gpu: dict[str, Any] | None, cpus: float, memory: float, hours: float, spot: bool,
           max_price: float | None, regions: tuple[str, ...], providers: tuple[str, ...], purpose: str,
           request_name: str | None, idempotency_key: str | None, wait: float | None, as_json: bool) -> None:
    """Provision the cheapest feasible offer (e.g. --gpu H100:4 --hours 6)."""
    body = request_body(tenant, gpu, cpus, memory, hours, spot, max_price, regions, providers, purpose)
    if request_name is not None:
        body["request_name"] = request_name
    if idempotency_key is not None and not valid_idempotency_key(idempotency_key):
        raise click.BadParameter("1 to 128 letters, digits, '.', '_', ':' or '-' (a UUID will do)",
                                 param_hint="--idempotency-key")
    reply = call("POST", "/compute/provision", body=body, query={"wait_seconds": wait},
                 timeout_seconds=(MAX_WAIT_SECONDS if wait is None else wait) + 30,
                 headers={"Idempotency-Key": idempotency_key} if idempotency_key else None)
    show(reply, as_json, _compute_human)


QUOTE_COLUMNS = (("#", "rank"), ("provider", "provider"), ("region", "region"), ("instance", "instance_type"),
                 ("gpu", "gpu_name"), ("count", "gpu_count"), ("vcpus", "vcpus"), ("mem gib", "memory_gib"),
                 ("spot", "spot"), ("disk $/h", "storage_price_per_hour"), ("$/hour", "price_per_hour"),
                 ("total $", "total_cost"))


def _quote_human(body: dict[str, Any]) -> str:
    """The optimizer's table (like SkyPilot's): the ranked offers, then how many each check excluded."""
    hours = body.get("duration_hours")
    offers = body.get("offers") or []
    head = (f"{body.get('feasible_count', 0)} feasible of {body.get('offers_considered', 0)} offers for "
            f"{_cell(hours)} h (tenant {body.get('tenant_id')})")
    lines = [head]
    if offers:
        lines += ["", table(offers, QUOTE_COLUMNS)]
        if len(offers) < (body.get("feasible_count") or 0):
            lines.append(f"... and {body['feasible_count'] - len(offers)} more (--limit)")
    excluded = body.get("excluded") or []
    if excluded:
        lines += ["", "Excluded:", table(excluded, (("reason", "reason"), ("offers", "count"), ("why", "detail")))]
    if not body.get("feasible"):
        lines += ["", f"Nothing is feasible: {body.get('message') or body.get('binding_constraint')}"]
    refusal = body.get("quota_refusal")
    if isinstance(refusal, dict):
        lines += ["", f"The tenant's quota would refuse it: {refusal.get('message')}"]
    elif body.get("would_provision"):
        first = offers[0] if offers else {}
        lines += ["", f"launch would try {first.get('offer_id')} first "
                      f"(${_cell(first.get('total_cost'))} for the whole duration); nothing was allocated"]
    return "\n".join(lines)


@compute.command()
@request_options
@click.option("--limit", type=click.IntRange(1, 50), default=10, show_default=True, help="Offers to show.")
@json_option
def quote(tenant: str, gpu: dict[str, Any] | None, cpus: float, memory: float, hours: float, spot: bool,
          max_price: float | None, regions: tuple[str, ...], providers: tuple[str, ...], purpose: str, limit: int,
          as_json: bool) -> None:
    """What launch would choose, with prices, and why other offers are excluded; allocates nothing."""
    body = request_body(tenant, gpu, cpus, memory, hours, spot, max_price, regions, providers, purpose)
    show(call("POST", "/compute/quote", body=body, query={"limit": limit}), as_json, _quote_human)


LIST_COLUMNS = (("request", "request_id"), ("state", "state"), ("gpu", "gpu_type"), ("count", "gpu_count"),
                ("hours", "duration_hours"), ("provider", "provider"), ("region", "region"),
                ("$/hour", "price_per_hour"), ("created", "created_at"))


@compute.command(name="list")
@click.option("--tenant", default=None, help="Whose requests (default: the token's tenant).")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True, help="Page size.")
@click.option("--cursor", default=None, help="The next page: the cursor the previous page printed.")
@click.option("--state", default=None,
              type=click.Choice(["requested", "allocating", "provisioning", "running", "terminating", "terminated",
                                 "failed"]), help="Only requests in this state.")
@json_option
def list_requests(tenant: str | None, limit: int, cursor: str | None, state: str | None, as_json: bool) -> None:
    """A tenant's compute requests, newest first."""

    def human(body: dict[str, Any]) -> str:
        out = table(body.get("items", []), LIST_COLUMNS)
        if body.get("next_cursor"):
            out += f"\n\nmore: --cursor {body['next_cursor']}"
        return out

    show(call("GET", "/compute/provision", query={"tenant_id": tenant, "limit": limit, "cursor": cursor,
                                                  "state": state}), as_json, human)


@compute.command()
@click.argument("request_id", required=False)
@click.option("--tenant", default=None, help="Without REQUEST_ID: whose quota and budget to show.")
@json_option
def status(request_id: str | None, tenant: str | None, as_json: bool) -> None:
    """A request's state and offer; without REQUEST_ID, capacity and quota.

    Without REQUEST_ID it shows the capacity by provider and region and, with --tenant (or a tenant token),
    the tenant's GPUs in use and remaining budget (the requests themselves: compute list)."""
    if request_id is None:
        show(call("GET", "/compute/capacity", query={"tenant_id": tenant}), as_json, _capacity_human)
    else:
        show(call("GET", f"/compute/provision/{_path(request_id)}"), as_json, _compute_human)


@compute.command()
@click.argument("request_id")
@json_option
def down(request_id: str, as_json: bool) -> None:
    """Terminate a request and release its capacity (idempotent)."""
    show(call("DELETE", f"/compute/provision/{_path(request_id)}"), as_json, _compute_human)


def _path(segment: str) -> str:
    """An id as one path segment (an id with '/' or '..' must not reach another route)."""
    if not segment or len(segment) > 256 or not all(c.isalnum() or c in "._-" for c in segment) or segment in {
            ".", ".."}:
        raise click.BadParameter(f"{segment!r} is not an id (letters, digits, '.', '_', '-')")
    return segment


# -- tenants --------------------------------------------------------------------------------------------


def _status_human(body: dict[str, Any]) -> str:
    resources = [{"resource": name, **value} for name, value in sorted((body.get("resources") or {}).items())]
    head = f"tenant {body.get('tenant_id')}: {body.get('overall')}"
    if not resources:
        return head
    return head + "\n\n" + table(resources, (("resource", "resource"), ("status", "status"),
                                             ("attempts", "attempts"), ("updated", "updated_at"),
                                             ("last error", "last_error")))


@click.group()
def tenants() -> None:
    """Tenants over the REST API (PROVISIONING_API_URL, PROVISIONING_TOKEN)."""


@tenants.command()
@click.argument("tenant_id")
@click.option("--name", required=True, help="Display name.")
@click.option("--tier", type=click.Choice(["free", "standard", "enterprise"]), default=None,
              help="Platform-admin only (default: the self-service tier).")
@click.option("--region", default=None, help="Region of the tenant's resources.")
@click.option("--owner", default=None, help="The owner's user id.")
@click.option("--dry-run", is_flag=True, help="Show what would be created; change nothing.")
@json_option
def create(tenant_id: str, name: str, tier: str | None, region: str | None, owner: str | None, dry_run: bool,
           as_json: bool) -> None:
    """Provision a tenant (its resources follow: see tenants status)."""
    body = {"tenant_id": tenant_id, "name": name, "tier": tier, "region": region, "owner_user_id": owner}
    reply = call("POST", "/provision", body={k: v for k, v in body.items() if v is not None},
                 query={"dry_run": True} if dry_run else None)
    if dry_run:
        show(reply, as_json, lambda b: json.dumps(b.get("plan", b), indent=2))
    else:
        show(reply, as_json, lambda b: f"tenant {b.get('tenant_id')}: accepted (event {b.get('event_id')}); "
             f"follow it with: python -m pipeline tenants status {b.get('tenant_id')}")


@tenants.command(name="status")
@click.argument("tenant_id")
@json_option
def tenant_status(tenant_id: str, as_json: bool) -> None:
    """Per-resource provisioning status and the overall status."""
    show(call("GET", f"/tenants/{_path(tenant_id)}/provisioning-status"), as_json, _status_human)


@tenants.command()
@click.argument("tenant_id")
@click.option("--purge", is_flag=True, help="Also delete the data-bearing resources (keyspace, bucket, index).")
@click.confirmation_option(prompt="Delete this tenant?", help="Do not ask for confirmation.")
@json_option
def delete(tenant_id: str, purge: bool, as_json: bool) -> None:
    """Delete a tenant: its resources are torn down in reverse order."""
    reply = call("DELETE", f"/tenants/{_path(tenant_id)}", query={"purge": purge})
    show(reply, as_json, lambda b: f"tenant {b.get('tenant_id')}: deletion accepted (purge: {b.get('purge')})")
