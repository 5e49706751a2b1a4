"""The console's HTTP API: JSON endpoints (documented as OpenAPI at ``/api/openapi.json``).

Each endpoint checks the session, the role it needs and, for a state-changing request, the CSRF
token (:meth:`controller.web.auth.SessionStore.require`) before it touches anything.  Request
bodies are size-limited and validated by pydantic models that forbid unknown keys; a bad one gets
a 4xx JSON answer ``{"error": "...", "detail": ...}`` naming what was wrong, never a traceback.
Reads go through the web server's own read connection (controller.web.queries); actions are
recorded in ``web_actions`` for the dispatch thread (controller.web.actions).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from controller.store import ACTIVE_TASK_STATES, Store
from controller.web import queries
from controller.web.actions import ACTIONS, record_action
from controller.web.auth import COOKIE, AuthError, SessionStore
from controller.web.sse import Broadcaster
from controller.web.users import MAX_PASSWORD_CHARS, ROLES, UserError, add_user, check_login

__all__ = ["ApiError", "ConsoleApi"]

MAX_BODY_BYTES = 16 * 1024
_ID = r"^[\x21-\x7e]{1,128}$"
POSITIONS_MAX = 20_000  # track points a page load gets (the page keeps 600 per unit)
POSITIONS_SCAN_ROWS = 100_000  # measurements looked at, newest first, to find them
LOGIN_FAILURES_PER_MIN = 10  # per client address: slows password guessing beyond scrypt's own cost


class ApiError(Exception):
    def __init__(self, status: int, message: str, detail: Any = None):
        super().__init__(message)
        self.status, self.message, self.detail = status, message, detail


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginBody(_Body):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


class DispatchBody(_Body):
    unit_id: str = Field(pattern=_ID)
    task_id: str | None = Field(default=None, pattern=_ID)
    incident_id: str | None = Field(default=None, pattern=_ID)
    x_m: float | None = Field(default=None, ge=-1e5, le=1e5)
    y_m: float | None = Field(default=None, ge=-1e5, le=1e5)

    @model_validator(mode="after")
    def _one_target(self) -> DispatchBody:
        given = [self.task_id is not None, self.incident_id is not None, self.x_m is not None or self.y_m is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one target: task_id, incident_id, or x_m and y_m")
        if given[2] and (self.x_m is None or self.y_m is None):
            raise ValueError("a point target needs both x_m and y_m")
        return self


class CloseBody(_Body):
    note: str = Field(min_length=1, max_length=2000)


class AckBody(_Body):
    note: str = Field(default="", max_length=2000)


class UserBody(_Body):
    name: str = Field(min_length=1, max_length=64)
    role: str = Field(pattern="^(viewer|operator|administrator)$")
    password: str = Field(min_length=8, max_length=MAX_PASSWORD_CHARS)


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError as err:
        raise ApiError(400, f"query parameter {name}={raw!r} is not an integer") from err
    if not lo <= v <= hi:
        raise ApiError(400, f"query parameter {name}={v} is outside {lo}..{hi}")
    return v


class ConsoleApi:
    """Endpoint handlers bound to one store, one action connection and one session store."""

    def __init__(self, store: Store, actions_conn: Store, sessions: SessionStore,
                 broadcaster: Broadcaster, secure_cookie: bool):
        self.store = store
        self.conn = actions_conn
        self.conn_lock = threading.Lock()
        self.sessions = sessions
        self.live = broadcaster
        self.secure_cookie = secure_cookie
        self._failures: dict[str, deque[float]] = {}
        self.site_plan: dict[str, Any] = {"name": None, "columns": [], "image": None}
        self.site_image_file: str | None = None

    # ------------------------------------------------------------------ helpers
    async def _body(self, request: Request, model: type[_Body]) -> Any:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise ApiError(415, "send the body as application/json")
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, f"body of {len(raw)} bytes is over the limit of {MAX_BODY_BYTES}")
        try:
            return model.model_validate_json(raw or b"{}")
        except ValidationError as err:
            detail = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "problem": e["msg"]}
                      for e in err.errors(include_url=False, include_input=False)]
            names = ", ".join(f"{d['field']}: {d['problem']}" for d in detail)
            raise ApiError(422, f"invalid request body ({names})", detail) from None

    def _record(self, user: str, role: str, action: str, target: str, params: dict[str, Any],
                state: str = "pending", result: str | None = None) -> int:
        with self.conn_lock:
            return record_action(self.conn, user, role, action, target, params, state, result)

    # ------------------------------------------------------------------ session
    async def login(self, request: Request) -> Response:
        """Log in with name and password; sets the session cookie and returns the CSRF token.
        ---
        summary: Log in
        requestBody: {content: {application/json: {schema: {type: object, required: [name, password],
          properties: {name: {type: string}, password: {type: string}}}}}}
        responses: {200: {description: "user, role, csrf token"}, 401: {description: wrong name or password},
          429: {description: too many failed logins}}
        """
        body = await self._body(request, LoginBody)
        client = request.client.host if request.client else "?"
        fails = self._failures.setdefault(client, deque(maxlen=LOGIN_FAILURES_PER_MIN))
        now = time.monotonic()
        if len(fails) == LOGIN_FAILURES_PER_MIN and now - fails[0] < 60:
            raise ApiError(429, "too many failed logins from this address; wait a minute")

        def check() -> str | None:
            with self.conn_lock:
                return check_login(self.conn, body.name, body.password)

        role = await run_in_threadpool(check)
        if role is None:
            fails.append(now)
            raise ApiError(401, "wrong user name or password")
        s = self.sessions.create(body.name, role)
        resp = JSONResponse({"user": s.user, "role": s.role, "csrf": s.csrf})
        resp.set_cookie(COOKIE, s.token, max_age=int(self.sessions.ttl_s), httponly=True, samesite="strict",
                        secure=self.secure_cookie, path="/")
        return resp

    async def logout(self, request: Request) -> Response:
        """End the session.
        ---
        summary: Log out (needs the CSRF token)
        responses: {200: {description: logged out}}
        """
        s = self.sessions.require(request, state_changing=True)
        self.sessions.drop(s.token)
        resp = JSONResponse({"ok": True})
        resp.delete_cookie(COOKIE, path="/")
        return resp

    async def session(self, request: Request) -> Response:
        """The current session.
        ---
        summary: Who am I
        responses: {200: {description: "user, role, csrf token"}, 401: {description: not logged in}}
        """
        s = self.sessions.require(request)
        return JSONResponse({"user": s.user, "role": s.role, "csrf": s.csrf,
                             "may": sorted(a for a, r in ACTIONS.items() if ROLES[s.role] >= ROLES[r])})

    # ------------------------------------------------------------------ reads
    async def _read(self, request: Request, fn: Any, *args: Any) -> Response:
        self.sessions.require(request)
        # serialised once, in the worker thread (a page load reads up to 20 000 track points)
        body = await run_in_threadpool(lambda: json.dumps(fn(*args), default=str, separators=(",", ":")).encode())
        return Response(body, media_type="application/json")

    async def units(self, request: Request) -> Response:
        """Units with liveness state, position, sensors and outbox depth.
        ---
        summary: Units
        responses: {200: {description: list of units}}
        """
        return await self._read(request, queries.unit_rows, self.store)

    async def alarms(self, request: Request) -> Response:
        """Newest alarms (``limit``, default 200), with nuclides, incident and acknowledgement.
        ---
        summary: Alarms
        parameters: [{name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 5000}}]
        responses: {200: {description: list of alarms, oldest first}}
        """
        return await self._read(request, queries.list_alarms, self.store, _int_param(request, "limit", 200, 1, 5000))

    async def incidents(self, request: Request) -> Response:
        """Incidents with estimate (x, y, height), 95 % region (ellipse), nuclides and task.
        ---
        summary: Incidents
        responses: {200: {description: list of incidents}}
        """
        return await self._read(request, queries.list_incidents, self.store)

    async def tasks(self, request: Request) -> Response:
        """Handheld tasks with their state, target, handheld and history.
        ---
        summary: Tasks
        responses: {200: {description: list of tasks}}
        """
        return await self._read(request, self.store.list_tasks)

    async def timeline(self, request: Request) -> Response:
        """Alarms, task transitions, unit states and operator actions in time order.
        ---
        summary: Timeline
        responses: {200: {description: events, oldest first}}
        """
        return await self._read(request, queries.timeline, self.store)

    async def positions(self, request: Request) -> Response:
        """Unit positions (tracks) of the last ``since_s`` seconds (default 900).
        ---
        summary: Tracks
        parameters: [{name: since_s, in: query, schema: {type: integer, minimum: 1, maximum: 86400}}]
        responses: {200: {description: "positions, oldest first"}}
        """
        since = _int_param(request, "since_s", 900, 1, 86400)

        def read() -> list[dict[str, Any]]:
            # bounded by rowid (the table has no time index, and a scan of all spectra would grow with the
            # database): the newest time among the newest rows, and at most SCAN_ROWS rows back
            row = self.store.query("SELECT MAX(id) AS id, MAX(t_epoch_s) AS t FROM (SELECT id, t_epoch_s FROM "
                                   "measurements ORDER BY id DESC LIMIT 1000) AS newest")[0]
            after = max(0, int(row["id"] or 0) - POSITIONS_SCAN_ROWS)
            return queries.positions_after(self.store, after, (row["t"] or 0.0) - since, limit=POSITIONS_MAX)

        return await self._read(request, read)

    async def vitals(self, request: Request) -> Response:
        """Camera boxes: each tracked person's newest heart rate, breathing, blink rate, abnormal score,
        alert and the cues behind it (numbers only, no images).
        ---
        summary: Camera-box vitals
        responses: {200: {description: newest message per (unit, track)}}
        """
        return await self._read(request, queries.vitals_rows, self.store)

    async def cctv_alerts(self, request: Request) -> Response:
        """Hall CCTV behaviour alerts (rule, zones, travellers, times), newest last, without evidence.
        ---
        summary: CCTV alerts
        responses: {200: {description: newest 200 alerts}}
        """
        return await self._read(request, queries.cctv_alert_rows, self.store)

    async def actions(self, request: Request) -> Response:
        """Operator actions with who, when, state and result.
        ---
        summary: Operator actions
        responses: {200: {description: newest actions}}
        """
        return await self._read(request, queries.list_actions, self.store)

    async def spectrum(self, request: Request) -> Response:
        """An alarm's spectrum, its background and the identified nuclides' lines.
        ---
        summary: Alarm spectrum
        parameters: [{name: alarm_id, in: path, required: true, schema: {type: string}}]
        responses: {200: {description: "counts, background, energy calibration, lines"},
          404: {description: unknown alarm}}
        """
        self.sessions.require(request)
        alarm_id = request.path_params["alarm_id"]
        data = await run_in_threadpool(queries.alarm_spectrum, self.store, alarm_id)
        if data is None:
            raise ApiError(404, f"alarm {alarm_id} is unknown")
        return JSONResponse(data)

    async def waterfall(self, request: Request) -> Response:
        """A waterfall of the alarming unit's spectra along its track, ``before_s`` (default 120) before the
        alarm's peak to ``after_s`` (default 60) after: one row per measurement, counts per second in
        equal energy bins.
        ---
        summary: Spectra waterfall around an alarm
        parameters: [{name: alarm_id, in: path, required: true, schema: {type: string}},
          {name: before_s, in: query, schema: {type: integer, minimum: 1, maximum: 3600}},
          {name: after_s, in: query, schema: {type: integer, minimum: 0, maximum: 3600}}]
        responses: {200: {description: "rows (oldest first): t_utc, x_m, y_m, gross_cps, cps_per_bin; e_max_kev"},
          404: {description: unknown alarm}}
        """
        self.sessions.require(request)
        alarm_id = request.path_params["alarm_id"]
        before, after = _int_param(request, "before_s", 120, 1, 3600), _int_param(request, "after_s", 60, 0, 3600)

        def read() -> dict[str, Any]:
            a = self._exists("SELECT unit_id, t_epoch_s, t_peak_epoch_s FROM alarms WHERE alarm_id = ?",
                             alarm_id, "alarm")
            t = a.get("t_peak_epoch_s") or a["t_epoch_s"]
            return {"alarm_id": alarm_id, **queries.waterfall(self.store, a["unit_id"], t - before, t + after)}

        return JSONResponse(await run_in_threadpool(read))

    async def site(self, request: Request) -> Response:
        """The site plan: container columns (row, bay, footprint in local metres, tiers) and the background image.
        ---
        summary: Site plan
        responses: {200: {description: "name, columns, image (url and local-metre bounds) or null"}}
        """
        self.sessions.require(request)
        return JSONResponse(self.site_plan)

    async def site_image(self, request: Request) -> Response:
        """The site's background image (as configured; served from the controller, never from the internet).
        ---
        summary: Site background image
        responses: {200: {description: the image}, 404: {description: no image configured}}
        """
        self.sessions.require(request)
        if not self.site_plan.get("image") or not self.site_image_file:
            raise ApiError(404, "no site image configured (web.site_image_file)")
        from starlette.responses import FileResponse

        from controller.web.site_plan import image_media_type

        return FileResponse(self.site_image_file, media_type=image_media_type(self.site_image_file))

    async def events(self, request: Request) -> Response:
        """Server-Sent Events: alarms, positions, units, tasks, incidents, actions as they are stored.
        ---
        summary: Live events (text/event-stream)
        responses: {200: {description: event stream}}
        """
        self.sessions.require(request)
        return StreamingResponse(self.live.stream(request.is_disconnected), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # ------------------------------------------------------------------ actions
    def _exists(self, sql: str, key: str, what: str) -> dict[str, Any]:
        rows = self.store.query(sql, (key,))
        if not rows:
            raise ApiError(404, f"{what} {key} is unknown")
        return rows[0]

    async def ack_alarm(self, request: Request) -> Response:
        """Acknowledge an alarm (operator); recorded with who and when.
        ---
        summary: Acknowledge alarm
        parameters: [{name: alarm_id, in: path, required: true, schema: {type: string}}]
        responses: {200: {description: recorded}, 404: {description: unknown alarm},
          409: {description: already acknowledged}}
        """
        s = self.sessions.require(request, "operator", state_changing=True)
        body = await self._body(request, AckBody)
        alarm_id = request.path_params["alarm_id"]

        def do() -> int:
            self._exists("SELECT alarm_id FROM alarms WHERE alarm_id = ?", alarm_id, "alarm")
            done = self.store.query('SELECT "user", t_utc FROM web_actions WHERE action = \'ack_alarm\' AND target = ?',
                                    (alarm_id,))
            if done:
                raise ApiError(409, f"alarm {alarm_id} was acknowledged by {done[0]['user']} at {done[0]['t_utc']}")
            return self._record(s.user, s.role, "ack_alarm", alarm_id, {"note": body.note}, "done", "acknowledged")

        action_id = await run_in_threadpool(do)
        return JSONResponse({"action_id": action_id, "state": "done"})

    async def dispatch(self, request: Request) -> Response:
        """Dispatch (or re-target) a handheld to a task, an incident or a point; a signed command.
        ---
        summary: Dispatch a handheld by hand
        requestBody: {content: {application/json: {schema: {type: object, required: [unit_id],
          properties: {unit_id: {type: string}, task_id: {type: string}, incident_id: {type: string},
          x_m: {type: number}, y_m: {type: number}}}}}}
        responses: {202: {description: "queued for the dispatcher; poll /api/actions"},
          404: {description: unknown unit, task or incident},
          422: {description: invalid body}}
        """
        s = self.sessions.require(request, "operator", state_changing=True)
        body: DispatchBody = await self._body(request, DispatchBody)

        def do() -> int:
            unit = self._exists("SELECT unit_id, unit_type FROM units WHERE unit_id = ?", body.unit_id, "unit")
            if unit["unit_type"] != "handheld":
                raise ApiError(422, f"unit {body.unit_id} is a {unit['unit_type']}, not a handheld")
            if body.task_id:
                t = self._exists("SELECT state FROM tasks WHERE task_id = ?", body.task_id, "task")
                if t["state"] not in ACTIVE_TASK_STATES:
                    raise ApiError(409, f"task {body.task_id} is already {t['state']}")
            if body.incident_id:
                self._exists("SELECT incident_id FROM incidents WHERE incident_id = ?", body.incident_id, "incident")
            return self._record(s.user, s.role, "dispatch", body.unit_id, body.model_dump(exclude_none=True))

        action_id = await run_in_threadpool(do)
        return JSONResponse({"action_id": action_id, "state": "pending"}, status_code=202)

    async def cancel_task(self, request: Request) -> Response:
        """Cancel a task; the handheld gets a signed cancel.
        ---
        summary: Cancel task
        parameters: [{name: task_id, in: path, required: true, schema: {type: string}}]
        responses: {202: {description: queued}, 404: {description: unknown task},
          409: {description: task already finished}}
        """
        s = self.sessions.require(request, "operator", state_changing=True)
        task_id = request.path_params["task_id"]

        def do() -> int:
            t = self._exists("SELECT state FROM tasks WHERE task_id = ?", task_id, "task")
            if t["state"] not in ACTIVE_TASK_STATES:
                raise ApiError(409, f"task {task_id} is already {t['state']}")
            return self._record(s.user, s.role, "cancel_task", task_id, {})

        action_id = await run_in_threadpool(do)
        return JSONResponse({"action_id": action_id, "state": "pending"}, status_code=202)

    async def close_incident(self, request: Request) -> Response:
        """Close an incident with a note (its active task is cancelled).
        ---
        summary: Close incident
        parameters: [{name: incident_id, in: path, required: true, schema: {type: string}}]
        requestBody: {content: {application/json: {schema: {type: object, required: [note],
          properties: {note: {type: string}}}}}}
        responses: {202: {description: queued}, 404: {description: unknown incident}}
        """
        s = self.sessions.require(request, "operator", state_changing=True)
        body: CloseBody = await self._body(request, CloseBody)
        incident_id = request.path_params["incident_id"]

        def do() -> int:
            self._exists("SELECT incident_id FROM incidents WHERE incident_id = ?", incident_id, "incident")
            return self._record(s.user, s.role, "close_incident", incident_id, {"note": body.note})

        action_id = await run_in_threadpool(do)
        return JSONResponse({"action_id": action_id, "state": "pending"}, status_code=202)

    async def export_incident(self, request: Request) -> Response:
        """Export an incident: ``format=n42`` (N42.42-2012 survey files with the spectra, one per unit;
        several units come as a zip) or ``format=html`` (a self-contained report with the map and the
        spectra).  Any logged-in role may export (it is a read); each export is recorded with who and when.
        ---
        summary: Export incident (N42.42-2012 or HTML report)
        parameters: [{name: incident_id, in: path, required: true, schema: {type: string}},
          {name: format, in: query, required: true, schema: {type: string, enum: [n42, html]}}]
        responses: {200: {description: "application/xml (one unit), application/zip (several) or text/html"},
          400: {description: unknown format}, 404: {description: unknown incident},
          422: {description: nothing to export (no positioned measurements)}}
        """
        s = self.sessions.require(request)
        incident_id = request.path_params["incident_id"]
        fmt = request.query_params.get("format", "")
        if fmt not in ("n42", "html"):
            raise ApiError(400, f"format={fmt!r}: give format=n42 or format=html")
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in incident_id)[:100]

        def do() -> tuple[bytes, str, str]:
            self._exists("SELECT incident_id FROM incidents WHERE incident_id = ?", incident_id, "incident")
            if fmt == "html":
                from controller.web.incident_report import render_incident_report

                text = render_incident_report(self.store, incident_id, f"{s.user} ({s.role})")
                if text is None:
                    raise ApiError(404, f"incident {incident_id} is unknown")
                data, media, name = text.encode(), "text/html; charset=utf-8", f"{safe}.html"
            else:
                data, media, name = _n42_export(self.store, incident_id, safe)
            self._record(s.user, s.role, "export_incident", incident_id, {"format": fmt, "bytes": len(data)},
                         "done", f"{name}, {len(data)} bytes")
            return data, media, name

        data, media, name = await run_in_threadpool(do)
        return Response(data, media_type=media, headers={"content-disposition": f'attachment; filename="{name}"'})

    async def add_user(self, request: Request) -> Response:
        """Create or replace an operator account (administrator).
        ---
        summary: Add user
        responses: {201: {description: created}, 403: {description: not an administrator}, 422: {description: invalid}}
        """
        s = self.sessions.require(request, "administrator", state_changing=True)
        body: UserBody = await self._body(request, UserBody)

        def do() -> None:
            with self.conn_lock:
                try:
                    add_user(self.conn, body.name, body.role, body.password, replace=True)
                except UserError as err:
                    raise ApiError(422, str(err)) from err
            self._record(s.user, s.role, "add_user", body.name, {"role": body.role}, "done", "account set")

        await run_in_threadpool(do)
        return JSONResponse({"name": body.name, "role": body.role}, status_code=201)


def _n42_export(store: Store, incident_id: str, safe_name: str) -> tuple[bytes, str, str]:
    """controller.incident_export's files, read back: one .n42, or a zip of one per unit."""
    import io
    import tempfile
    import zipfile

    from controller.incident_export import ExportError, export_incident

    with tempfile.TemporaryDirectory(prefix="cedge-export-") as tmp:
        try:
            paths = export_incident(store, incident_id, tmp)
        except ExportError as err:
            raise ApiError(422, str(err)) from err
        if len(paths) == 1:
            return paths[0].read_bytes(), "application/xml", paths[0].name
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for path in paths:
                z.write(path, path.name)
        return buf.getvalue(), "application/zip", f"{safe_name}_n42.zip"


def error_response(err: ApiError | AuthError) -> JSONResponse:
    content: dict[str, Any] = {"error": err.message}
    if isinstance(err, ApiError) and err.detail is not None:
        content["detail"] = err.detail
    return JSONResponse(content, status_code=err.status)
