"""/api/v1 fuzzed from its own OpenAPI document: Schemathesis against the worker's web app on a real socket.

The app (API with the compute and scaling routes, in-memory state, two seeded tenants) is served on
127.0.0.1 from a thread of its own; the schema is loaded from the served ``/api/v1/openapi.json``. Every
operation gets Schemathesis' deterministic coverage cases (boundary values, missing and wrong-typed fields,
unexpected methods) and Hypothesis-generated cases, valid (positive) and invalid (negative), as a
platform-admin and, in a smaller pass, as the tenant-admin of one tenant. Invariants (``CHECKS``):

* no 5xx;
* the status is documented for the operation, and the body matches the schema documented for it;
* every 4xx is an RFC 9457 problem document (application/problem+json) with the service's ``code``,
  ``details`` and the earlier ``error`` object (``tests/web/conftest.py``: ``check_problem``);
* a request the document calls invalid is refused (4xx), and one it calls valid is not refused as malformed
  (a rule JSON Schema cannot express - a model validator's ``value_error`` - is the only exception).

The number of cases sent is reported at the end of the module; every operation gets cases in every pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from pipeline.compute.catalog import load_catalogs
from pipeline.compute.factory import catalog_paths
from pipeline.config import Settings
from pipeline.events.models import Tier
from pipeline.scaling.policies import parse_policy
from pipeline.scaling.records import PolicyChange
from tests.pipeline.compute.support import runtime_env
from tests.web.conftest import ADMIN, SECRET, FakeReadiness, check_problem, fixed_quota, tenant_event, token
from tests.web.memory_state import MemoryState
from tests.web.test_scaling_api import TT, make_engine
from web.auth import Authenticator
from web.compute import ComputeApi, LocalCompute
from web.compute import operations as compute_operations
from web.scaling import EngineBackend, scaling_operations
from web.server import build_root_app

ACME_ADMIN = token(("tenant-admin",), "acme", sub="acme-admin")
#: Generated cases per operation and generation mode (positive, negative) for the platform-admin pass.
EXAMPLES = 30
#: The same for the tenant-admin pass.
TENANT_EXAMPLES = 8
#: Error codes that say "the request does not match the document" (not "the resource is not there").
MALFORMED = frozenset({"validation-error", "invalid-query", "malformed-json"})


class ServedApp:
    """The worker's web app on 127.0.0.1:<free port>, served by an event loop in its own thread (the
    Schemathesis calls are blocking)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzzed-app", daemon=True)
        self.stack = contextlib.AsyncExitStack()
        self.base_url = ""

    def __enter__(self) -> ServedApp:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(60)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self.stack.aclose(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _start(self) -> None:
        state = MemoryState(quota_for_tier=fixed_quota)
        for tenant_id in ("acme", "globex"):
            await state.submit_tenant(tenant_event(tenant_id, Tier.ENTERPRISE))

        def quota_gpus(tenant_id: str) -> int | None:
            quota = state.stores.quotas.get(tenant_id)
            return quota.limits.gpus if quota is not None else None

        offers = load_catalogs(catalog_paths(Settings(compute_catalog_dir=None)))
        compute = await self.stack.enter_async_context(runtime_env(offers, quota_gpus=quota_gpus))
        engine = make_engine(state)
        backend = EngineBackend(engine)
        await backend.submit(PolicyChange(event_id="seed", tenant_id="acme", occurred_at=datetime.now(UTC), op="put",
                                          policy_id=TT["policy_id"], policy=parse_policy(TT), actor="seed"))
        local = LocalCompute(compute.runtime, state.stores.tenants.get)
        state.compute_records = compute.runtime.service.records  # the costs route reads what the fuzzer provisions
        state.compute_budgets = {"acme": 500.0}
        extra = [*compute_operations(ComputeApi(local, None, provision_wait_s=0)),
                 *scaling_operations(backend, state)]
        app = build_root_app(state, state, Authenticator(hs256_secret=SECRET), FakeReadiness(), None,
                             extra_operations=extra)
        runner = web.AppRunner(app)
        await runner.setup()
        self.stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"


# -- checks -----------------------------------------------------------------------------------------------


def error_shape(_ctx: Any, response: Any, _case: Any) -> bool | None:
    """Every 4xx/5xx is a problem document (application/problem+json) in the common shape."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0].split(";")[0].strip()
    check_problem(response.status_code, content_type, response.json())
    return None


def valid_data_accepted(_ctx: Any, response: Any, case: Any) -> bool | None:
    """A request the document calls valid is not refused as malformed: a 400/422 naming a field rule means
    the document and the server disagree. Model validators' cross-field rules (``value_error``) are exempt."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code not in (400, 422):
        return None
    error = response.json()["error"]
    if error["code"] not in MALFORMED:
        return None
    problems = error["details"].get("errors", [{"type": "?"}])
    rules = {problem.get("type") for problem in problems}
    assert rules <= {"value_error"}, f"a request valid by the document was refused: {error}"
    return None


def invalid_data_refused(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schemathesis' ``negative_data_rejection``, except for a case whose invalid part is an undeclared query
    parameter without a value (None or []): the HTTP client leaves it out, so the request actually sent is valid."""
    declared = {parameter.name for parameter in case.operation.query}
    if any(value in (None, []) and name not in declared for name, value in (case.query or {}).items()):
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS: list[Callable[..., bool | None]] = [
    not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
    invalid_data_refused, error_shape, valid_data_accepted,
]


# -- the run ----------------------------------------------------------------------------------------------


CASES: Counter[str] = Counter()  # cases sent, by pass


@pytest.fixture(scope="module")
def served(request: pytest.FixtureRequest) -> Iterator[ServedApp]:
    with ServedApp() as app:
        yield app
    by_pass = ", ".join(f"{name} {count}" for name, count in sorted(CASES.items()))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # shown even when output is captured
            reporter.write_line(f"\nOpenAPI fuzzing: {sum(CASES.values())} cases sent ({by_pass})")


@pytest.fixture(scope="module")
def api_schema(served: ServedApp) -> Any:
    schema = schemathesis.openapi.from_url(f"{served.base_url}/api/v1/openapi.json")
    schema.config.phases.coverage.generate_duplicate_query_parameters = True  # ?limit=1&limit=500
    return schema


def operations_of(schema: Any) -> Iterator[Any]:
    for result in schema.get_all_operations():
        yield result.ok()


class Runner:
    def __init__(self, schema: Any, served: ServedApp, bearer: str, tally: str) -> None:
        self.schema = schema
        self.base_url = f"{served.base_url}/api/v1"
        self.headers = {"Authorization": f"Bearer {bearer}"}
        self.tally = tally
        self.failures: list[str] = []
        self.sent: set[str] = set()

    def operations(self) -> Iterator[Any]:
        return operations_of(self.schema)

    def send(self, case: Any) -> None:
        CASES[self.tally] += 1
        self.sent.add(case.operation.label)
        case.call_and_validate(base_url=self.base_url, headers=self.headers, checks=CHECKS)

    def record(self, operation: Any, exc: BaseException) -> None:
        self.failures.append(f"{operation.label}: {exc}")

    def generated(self, operation: Any, strategy: SearchStrategy[Any], examples: int) -> None:
        @given(case=strategy)
        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                  phases=[Phase.generate])  # no shrinking: the first failing case is reported as it was sent
        def run(case: Any) -> None:
            self.send(case)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:
            self.record(operation, exc)

    def coverage(self, operation: Any) -> None:
        for case in self.schema.iter_coverage_cases(operation, generation_modes=list(GenerationMode),
                                                    generation_config=self.schema.config.generation):
            try:
                self.send(case)
            except (Exception, BaseExceptionGroup) as exc:
                self.record(operation, exc)
                return

    def check(self) -> None:
        assert self.sent == {operation.label for operation in self.operations()}, "an operation got no case"
        assert not self.failures, f"{len(self.failures)} operations failed:\n\n" + "\n\n".join(self.failures)


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    labels = {operation.label for operation in operations_of(api_schema)}
    assert len(labels) >= 19 and "POST /compute/provision" in labels and "PUT /scaling/policies/{policy_id}" in labels


def test_coverage_cases_as_platform_admin(api_schema: Any, served: ServedApp) -> None:
    runner = Runner(api_schema, served, ADMIN, "coverage")
    for operation in runner.operations():
        runner.coverage(operation)
    runner.check()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_generated_cases_as_platform_admin(api_schema: Any, served: ServedApp, mode: GenerationMode) -> None:
    runner = Runner(api_schema, served, ADMIN, f"platform-admin {mode.value}")
    for operation in runner.operations():
        runner.generated(operation, operation.as_strategy(generation_mode=mode), EXAMPLES)
    runner.check()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_generated_cases_as_tenant_admin(api_schema: Any, served: ServedApp, mode: GenerationMode) -> None:
    runner = Runner(api_schema, served, ACME_ADMIN, f"tenant-admin {mode.value}")
    for operation in runner.operations():
        runner.generated(operation, operation.as_strategy(generation_mode=mode), TENANT_EXAMPLES)
    runner.check()
