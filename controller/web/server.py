"""The console's web server: Starlette on uvicorn, in a thread of the controller process.

Why Starlette + uvicorn: a small, maintained ASGI toolkit (routing, cookies, streaming responses
for Server-Sent Events, static files from the package) on the reference ASGI server, with no
template engine or ORM the console does not need.  The server runs its own event loop in its own
thread, and every SQLite call runs in a worker thread, so neither ingest nor the page wait on each
other; it reads through its own connection (SQLite WAL: readers never block the writer).

Security headers on every answer: a Content-Security-Policy that allows only this origin's scripts,
styles and connections (no inline script, no CDN: the page ships in the package), no framing,
no sniffing, no referrer; API answers are not cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.schemas import SchemaGenerator
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.config import WebConfig
from controller.store import Store
from controller.web.api import ApiError, ConsoleApi, error_response
from controller.web.auth import AuthError, SessionStore
from controller.web.db import connect
from controller.web.host_check import HostCheck
from controller.web.site_plan import SitePlanError, load_site_plan
from controller.web.sse import Broadcaster

__all__ = ["WebServer", "build_app"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(str(resources.files("controller.web") / "static"))
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class _SecurityHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_api = scope["path"].startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", _CSP.encode()), (b"x-content-type-options", b"nosniff"),
                            (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer")]
                if is_api:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def build_app(store: Store, config: WebConfig, history: Store, actions: Store) -> tuple[Starlette, Broadcaster]:
    """The console app on ``store`` (reads), ``history`` (the unit-state changes it records) and
    ``actions`` (operator actions and users): three connections, so no write waits on a long read."""
    sessions = SessionStore(config.session_ttl_s)
    live = Broadcaster(store, config.poll_interval_s, history=history)
    api = ConsoleApi(store, actions, sessions, live, secure_cookie=config.tls_cert_file is not None)
    try:  # a bad site file or image costs the drawing, not the console
        api.site_plan, api.site_image_file = load_site_plan(config), config.site_image_file
    except SitePlanError as err:
        log.error("console: no site plan on the map: %s", err)
    schemas = SchemaGenerator({"openapi": "3.0.3", "info": {
        "title": "customs-edge operator console API", "version": "1",
        "description": "Session cookie from POST /api/login; state-changing requests need the X-CSRF-Token "
                       "header with the token the login returned. Errors: {\"error\": message, \"detail\": ...}."}})

    async def index(_request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-store"})

    async def openapi(request: Request) -> Response:
        return JSONResponse(schemas.get_schema(routes=app.routes))

    routes = [
        Route("/", index),
        Route("/api/openapi.json", openapi, include_in_schema=False),
        Route("/api/login", api.login, methods=["POST"]),
        Route("/api/logout", api.logout, methods=["POST"]),
        Route("/api/session", api.session),
        Route("/api/units", api.units),
        Route("/api/alarms", api.alarms),
        Route("/api/alarms/{alarm_id}/spectrum", api.spectrum),
        Route("/api/alarms/{alarm_id}/waterfall", api.waterfall),
        Route("/api/alarms/{alarm_id}/ack", api.ack_alarm, methods=["POST"]),
        Route("/api/incidents", api.incidents),
        Route("/api/incidents/{incident_id}/close", api.close_incident, methods=["POST"]),
        Route("/api/incidents/{incident_id}/export", api.export_incident),
        Route("/api/tasks", api.tasks),
        Route("/api/tasks/{task_id}/cancel", api.cancel_task, methods=["POST"]),
        Route("/api/dispatch", api.dispatch, methods=["POST"]),
        Route("/api/positions", api.positions),
        Route("/api/timeline", api.timeline),
        Route("/api/actions", api.actions),
        Route("/api/vitals", api.vitals),
        Route("/api/cctv_alerts", api.cctv_alerts),
        Route("/api/users", api.add_user, methods=["POST"]),
        Route("/api/site", api.site),
        Route("/api/site/image", api.site_image),
        Route("/api/events", api.events),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]

    async def on_api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError | AuthError)
        return error_response(exc)

    async def on_http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    async def on_error(request: Request, exc: Exception) -> Response:
        log.exception("console: %s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the controller log"},
                            status_code=500)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(live.run())
        try:
            yield
        finally:
            task.cancel()

    # outermost first: a request for a foreign Host is refused before anything else sees it
    middleware = [Middleware(HostCheck, bind_host=config.host, extra=config.allowed_hosts),
                  Middleware(_SecurityHeaders)]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware, exception_handlers={
        ApiError: on_api_error, AuthError: on_api_error, HTTPException: on_http_error, Exception: on_error})
    return app, live


def _bind(host: str, port: int, fallback: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        if not (fallback and err.errno == errno.EADDRINUSE):
            sock.close()
            raise
        log.warning("console: port %d on %s is in use; taking a free port", port, host)
        sock.bind((host, 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class WebServer:
    """Binds at :meth:`start` (so the address is known and a bind error is raised there), serves in a thread."""

    def __init__(self, config: WebConfig, db_path: str, port_was_given: bool = False,
                 url_file_default: str | None = None):
        """``db_path``: the store's location (a SQLite path or a ``postgresql://`` URL);
        ``url_file_default``: where the bound address is written unless ``config.url_file`` says
        (default ``<db_path>.console.json``, which needs a SQLite path)."""
        self.config = config
        self.db_path = db_path
        self.url_file_default = url_file_default or f"{db_path}.console.json"
        self.port_was_given = port_was_given
        self.url: str | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._store: Store | None = None
        self._conns: list[Store] = []
        self.live: Broadcaster | None = None

    def start(self) -> str:
        c = self.config
        self._conns = [connect(self.db_path), connect(self.db_path)]  # console tables exist before the first read
        self._store = Store(self.db_path, create=False)
        app, self.live = build_app(self._store, c, *self._conns)
        # a fixed port someone asked for must be that port; the default falls back to a free one
        sock = _bind(c.host, c.port, fallback=not self.port_was_given)
        port = sock.getsockname()[1]
        scheme = "https" if c.tls_cert_file else "http"
        host = f"[{c.host}]" if ":" in c.host else c.host
        self.url = f"{scheme}://{host}:{port}/"
        ucfg = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", ssl_certfile=c.tls_cert_file,
                              ssl_keyfile=c.tls_key_file, timeout_graceful_shutdown=2, limit_concurrency=1000)
        self._server = uvicorn.Server(ucfg)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="web", daemon=True)
        self._thread.start()
        url_file = c.url_file or self.url_file_default
        try:
            Path(url_file).write_text(json.dumps({"url": self.url}) + "\n")
        except OSError as err:
            log.warning("console: cannot write %s: %s", url_file, err)
        log.info("operator console at %s (cedge controller user add NAME --role operator)", self.url)
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._store is not None:
            self._store.close()
        for conn in self._conns:  # the console's own connections (unit-state history, actions and users)
            conn.close()
        self._conns = []

    def stats(self) -> dict[str, Any]:
        live = self.live
        return {"clients": len(live.clients), "polls": live.polls, "events_sent": live.events_sent,
                "resyncs": live.resyncs} if live else {}
