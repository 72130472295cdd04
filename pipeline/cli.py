"""The command line: ``python -m pipeline COMMAND``; every command and group answers ``--help``
without doing anything else."""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from typing import Any

import click

from pipeline.client_commands import compute, tenants

#: A development token lives at most this long.
MAX_TOKEN_TTL = timedelta(days=30)
_DURATION = re.compile(r"^\s*(\d{1,7}(?:\.\d{1,6})?)\s*([smhd]?)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 3600}


class Duration(click.ParamType):
    """``90s``, ``30m``, ``24h``, ``7d`` (a bare number is hours), more than 0 and at most 30 days."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = _DURATION.match(str(value))
        if match is None:
            self.fail(f"{value!r}: expected a number with s, m, h or d (24h)", param, ctx)
        duration = timedelta(seconds=float(match[1]) * _UNITS[match[2]])
        if not timedelta(0) < duration <= MAX_TOKEN_TTL:
            self.fail(f"{value!r}: must be more than 0 and at most {MAX_TOKEN_TTL.days} days", param, ctx)
        return duration


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def cli() -> None:
    """The provisioning service: its worker, bridge and tools, and a client of its REST API."""


@cli.command()
def worker() -> None:
    """Run the worker (agents, web API, Pulsar bridge)."""
    from pipeline.worker import run_worker

    run_worker()


@cli.command()
def bridge() -> None:
    """Run the Pulsar <-> Kafka bridge on its own.

    For workers started with BRIDGE_ENABLED=false."""
    import asyncio

    from pipeline import logs
    from pipeline.bridge import Bridge
    from pipeline.config import get_settings

    settings = get_settings()
    logs.configure(settings.log_level, settings.log_format)
    asyncio.run(Bridge(settings).run_forever())


@cli.command(
    add_help_option=False,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def backtest(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Replay a demand series through the scaling engine.

    Its options: python -m pipeline backtest --help."""
    from pipeline.scaling.backtest import main as run_backtest

    ctx.exit(run_backtest(list(args)))


@cli.command()
def schemas() -> None:
    """Write the events' JSON Schema files from their models."""
    from pipeline.contract.schema_files import write_schemas

    for path in write_schemas():
        click.echo(f"wrote {path}", err=True)


@cli.command(name="dev-token")
@click.option("--tenant", default=None, help="The token's tenant (required for the tenant roles).")
@click.option("--role", "roles", multiple=True, default=("platform-admin",), show_default=True,
              type=click.Choice(["platform-admin", "tenant-admin", "tenant-viewer"]), help="Repeatable.")
@click.option("--sub", default="dev-admin", show_default=True, help="The token's subject (user id).")
@click.option("--ttl", type=Duration(), default="24h", show_default=True, help="Lifetime: 90s, 30m, 24h, 7d.")
def dev_token(tenant: str | None, roles: tuple[str, ...], sub: str, ttl: timedelta) -> None:
    """Print an HS256 development token signed with JWT_SECRET."""
    from pipeline.config import get_settings
    from pipeline.events.models import TENANT_ID_PATTERN
    from web.auth import issue_dev_token

    if tenant is not None and not re.fullmatch(TENANT_ID_PATTERN, tenant):
        raise click.BadParameter(f"{tenant!r} is not a tenant id ({TENANT_ID_PATTERN})", param_hint="--tenant")
    if "platform-admin" not in roles and tenant is None:
        raise click.UsageError("a tenant role needs --tenant")
    if not 1 <= len(sub) <= 200 or not sub.isprintable():
        raise click.BadParameter("1 to 200 printable characters", param_hint="--sub")
    settings = get_settings()
    if settings.jwt_secret is None:
        click.echo("JWT_SECRET is not set: development tokens are signed with it", err=True)
        sys.exit(2)
    click.echo(issue_dev_token(settings.jwt_secret.get_secret_value(), sub, list(dict.fromkeys(roles)), tenant, ttl))


cli.add_command(compute)
cli.add_command(tenants)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        cli.main(args=argv, prog_name="python -m pipeline", standalone_mode=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        click.echo(str(exc.code), err=True)
        return 1
    return 0
