"""Everything the worker's web server serves, as plain aiohttp pieces.

``install`` adds to an aiohttp Application: ``/health``, ``/ready``, ``/metrics``, the ``/api/v1`` sub-app,
the interactive API page ``/api/v1/docs``, the dashboard at ``/ui/`` and its event stream ``/ui/events``, plus
the request-latency and error middlewares. ``build_root_app`` installs them on a fresh Application (tests, or a
standalone server); ``mount`` installs them on the Faust worker's aiohttp Application, with the state, gateway,
planner, routes and peer endpoints the composition root (``pipeline/worker.py``) built for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from aiohttp import web
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from pipeline import worker_metrics
from pipeline.config import Settings
from pipeline.events.models import Tier
from pipeline.metrics import HTTP_LATENCY
from pipeline.worker_metrics import WorkerCollector
from web.api import Operation, Planner, Readiness, build_api
from web.auth import Authenticator
from web.costs import operations as cost_operations
from web.errors import Handler, error_middleware, route_pattern
from web.live import HUB_KEY, LiveHub, events_handler
from web.peers import peer_middleware, peer_secret
from web.state import CommandGateway, StateReader

logger = logging.getLogger(__name__)

UI_DIR = Path(__file__).with_name("ui")
API_PREFIX = "/api/v1"
API_DOCS = f"{API_PREFIX}/docs"
#: Swagger UI's files, from npm's swagger-ui-dist (version and source in its SOURCE.md).
SWAGGER_UI = "vendor/swagger-ui"
#: The dashboard's chart library (vendored; source and version in its SOURCE.md).
UPLOT = "vendor/uplot"
#: Routes whose duration is not a request latency (long-lived streams), left out of the histogram.
STREAMING_ROUTES = frozenset({"ui_events"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

UI_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@web.middleware
async def latency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Observe every request in HTTP_LATENCY, labelled by method, route pattern (never the raw path), status."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = request.match_info.route
        if route is None or route.name not in STREAMING_ROUTES:
            method = request.method if request.method in _METHODS else "OTHER"
            HTTP_LATENCY.labels(method, route_pattern(request), str(status)).observe(time.perf_counter() - started)


async def health(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def ready_handler(readiness: Readiness) -> Handler:
    async def ready(_request: web.Request) -> web.Response:
        try:
            ok, reason = readiness()
        except Exception:
            logger.exception("the readiness check failed")
            ok, reason = False, "the readiness check failed"
        if ok:
            return web.json_response({"status": "ready", "reason": reason})
        return web.json_response({"status": "not-ready", "reason": reason}, status=503, headers={"Retry-After": "5"})

    return ready


async def metrics(request: web.Request) -> web.Response:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encoder(REGISTRY), headers={"Content-Type": content_type})


def _ui_file(name: str) -> Handler:
    path = UI_DIR / name

    async def serve(_request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers=UI_HEADERS)

    return serve


async def _ui_redirect(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


def install(
    app: web.Application,
    reader: StateReader,
    gateway: CommandGateway,
    auth: Authenticator,
    readiness: Readiness,
    planner: Planner | None,
    extra_operations: Sequence[Operation] = (),
    self_service_tier: Tier = Tier.FREE,
) -> None:
    """Add every route, the /api/v1 sub-app, the middlewares and the live hub to ``app`` (not started yet)."""
    app.middlewares.append(latency_middleware)
    app.middlewares.append(error_middleware)
    app.router.add_route("GET", "/health", health, name="health")
    app.router.add_route("GET", "/ready", ready_handler(readiness), name="ready")
    app.router.add_route("GET", "/metrics", metrics, name="metrics")
    operations = [*cost_operations(reader), *extra_operations]  # the cost routes read through ``reader`` like the core
    app.add_subapp(API_PREFIX, build_api(reader, gateway, auth, planner, readiness=readiness,
                                           extra_operations=operations, self_service_tier=self_service_tier))
    hub = LiveHub(reader)
    app[HUB_KEY] = hub
    app.on_startup.append(hub.on_startup)
    app.on_shutdown.append(hub.on_shutdown)
    app.router.add_route("GET", "/ui", _ui_redirect, name="ui_redirect")
    app.router.add_route("GET", "/ui/", _ui_file("index.html"), name="ui_index")
    app.router.add_route("GET", "/ui/app.js", _ui_file("app.js"), name="ui_js")
    app.router.add_route("GET", "/ui/app.css", _ui_file("app.css"), name="ui_css")
    app.router.add_route("GET", "/ui/charts.js", _ui_file("charts.js"), name="ui_charts_js")
    app.router.add_route("GET", "/ui/ui.js", _ui_file("ui.js"), name="ui_shared_js")
    app.router.add_route("GET", "/ui/uplot.js", _ui_file(f"{UPLOT}/uPlot.iife.min.js"), name="ui_uplot_js")
    app.router.add_route("GET", "/ui/uplot.css", _ui_file(f"{UPLOT}/uPlot.min.css"), name="ui_uplot_css")
    app.router.add_route("GET", "/ui/events", events_handler(reader, hub, auth), name="ui_events")
    # The interactive API page (Swagger UI, vendored): public like the OpenAPI document it renders; "Try it out"
    # needs a bearer token like any other call. On the root app: it is HTML, not an operation of the API.
    for path, name, file in (
        ("", "api_docs", "api-docs.html"),
        ("/api-docs.js", "api_docs_js", "api-docs.js"),
        ("/swagger-ui-bundle.js", "api_docs_bundle", f"{SWAGGER_UI}/swagger-ui-bundle.js"),
        ("/swagger-ui.css", "api_docs_css", f"{SWAGGER_UI}/swagger-ui.css"),
    ):
        app.router.add_route("GET", f"{API_DOCS}{path}", _ui_file(file), name=name)


def build_root_app(
    reader: StateReader,
    gateway: CommandGateway,
    auth: Authenticator,
    readiness: Readiness,
    planner: Planner | None = None,
    extra_operations: Sequence[Operation] = (),
    self_service_tier: Tier = Tier.FREE,
) -> web.Application:
    """A root Application with everything ``mount`` adds to the worker's, for tests or a standalone server."""
    app = web.Application()
    install(app, reader, gateway, auth, readiness, planner, extra_operations, self_service_tier)
    return app


def mount(
    web_app: web.Application,
    settings: Settings,
    reader: StateReader,
    gateway: CommandGateway,
    readiness: Readiness,
    lag: Callable[[], Mapping[str, int]],
    planner: Planner | None,
    extra_operations: Sequence[Operation],
    internal_routes: Iterable[web.AbstractRouteDef],
) -> None:
    """Install the web layer on the Faust worker's aiohttp Application ``web_app`` (not started yet): everything
    ``install`` adds, the worker's gauges, the peers' internal endpoints and the peer middleware."""
    worker_metrics.register(WorkerCollector(readiness, lag))
    install(web_app, reader, gateway, Authenticator.from_settings(settings), readiness, planner, extra_operations,
            settings.self_service_tier)
    web_app.router.add_routes(internal_routes)
    web_app.middlewares.append(peer_middleware(peer_secret(settings), gateway.audit))
    logger.info("web layer mounted: /api/v1, /api/v1/docs, /ui/, /health, /ready, /metrics")
