"""The composition root: ``build_worker`` declares every agent module and table on one app, and its web
installer mounts exactly the routes the authorization matrix covers."""

from __future__ import annotations

import importlib
import pkgutil
from types import SimpleNamespace

from aiohttp import web
from pydantic import SecretStr

import agents
from pipeline.config import Settings
from pipeline.worker import AGENT_MODULES, build_worker
from tests.web.conftest import PEER_SECRET, SECRET
from tests.web.test_authorization_matrix import MATRIX, routes_of


def settings() -> Settings:
    return Settings(jwt_secret=SecretStr(SECRET), peer_secret=SecretStr(PEER_SECRET))


def test_every_agent_module_is_in_the_explicit_list() -> None:
    registering = set()
    for module in pkgutil.iter_modules(agents.__path__):
        loaded = importlib.import_module(f"agents.{module.name}")
        if callable(getattr(loaded, "register", None)):
            registering.add(loaded.__name__)
    assert registering == {module.__name__ for module in AGENT_MODULES}


def test_two_workers_built_in_one_process_do_not_share_their_declarations() -> None:
    first, second = build_worker(settings()), build_worker(settings())
    assert first.app is not second.app
    assert set(first.app.agents) == set(second.app.agents)
    assert len(first.app.agents) == 18
    assert set(first.app.tables) == set(second.app.tables) == {
        "anomalies", "budget-alerts", "compute-records", "model_snapshots", "processed-events", "provisioning-status",
        "quotas", "scaling_decisions", "scaling_demands", "scaling_index", "scaling_policies", "scaling_state",
        "tenants", "usage", "users", "utilization",
    }
    assert first.tables.tenants is not second.tables.tenants


async def test_the_worker_serves_exactly_the_routes_of_the_authorization_matrix() -> None:
    worker = build_worker(settings())
    web_app = web.Application()
    assert worker.app.web_installer is not None
    worker.app.web_installer(SimpleNamespace(web_app=web_app))  # type: ignore[arg-type]  # Faust's web driver
    try:
        served = routes_of(web_app)
    finally:
        await worker.deps.compute.close()
    assert served == set(MATRIX)
