"""The operator console on either store engine (issues 18 and 20), and the arrival hall's CCTV
behaviour alerts in it (issue 19): a list endpoint, the timeline, and a live push when a new alert is
stored.  A real uvicorn server in this process on a SQLite file or a private PostgreSQL (no browser,
no broker); the page's tables are driven by the same endpoints.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pg_fixture import pg_server, pg_url  # noqa: F401 - fixtures

from controller.config import WebConfig
from controller.store import Store

PASSWORD = "cctv-test-pass-1"


def _alert(alert_id: str, rule: str, t_epoch_s: float) -> dict[str, Any]:
    from controller.cctv.behaviour_alerts import Alert
    from controller.cctv.live_feed import alert_row

    evidence = {"trajectories": {"T7": {"samples_t_x_y": [[t_epoch_s, 1.0, 2.0]], "tracklets": ["cam-1/c1/3"],
                                        "gaps": []}}, "dwell_s": 240.0}
    a = Alert(rule, ("T7",), ("corridor",), t_epoch_s - 240, t_epoch_s, t_epoch_s, evidence, alert_id)
    return alert_row(a, "2026-12-08T03:00:00Z", 4096)


class _Client:
    """Logged-in HTTP client of the console (session cookie)."""

    def __init__(self, url: str) -> None:
        self.url = urlsplit(url)
        self.cookie = ""
        status, headers, _ = self.call("POST", "/api/login", {"name": "olga", "password": PASSWORD})
        assert status == 200
        self.cookie = headers["set-cookie"].split(";", 1)[0]

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=30)
        headers = {"Cookie": self.cookie} if self.cookie else {}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(raw) if raw[:1] in b"[{" else raw


READS = ("/api/session", "/api/units", "/api/alarms", "/api/incidents", "/api/tasks", "/api/timeline",
         "/api/positions", "/api/vitals", "/api/actions", "/api/cctv_alerts", "/api/site")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_console_serves_either_engine_with_cctv_alerts_on_the_timeline_and_pushed_live(
        backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from controller.web.actions import record_action
    from controller.web.db import connect
    from controller.web.server import WebServer
    from controller.web.sse import Broadcaster
    from controller.web.users import add_user

    db = request.getfixturevalue("pg_url") if backend == "postgresql" else str(tmp_path / "c.sqlite")
    with Store(db) as store:
        store.save_cctv_alerts([_alert("A-1", "loitering", 1_796_000_000.0)])
    conn = connect(db)
    add_user(conn, "olga", "operator", PASSWORD)
    server = WebServer(WebConfig(port=0), db, url_file_default=str(tmp_path / "console.json"))
    server.start()
    try:
        anonymous = _Client.__new__(_Client)
        anonymous.url, anonymous.cookie = urlsplit(server.url), ""
        assert anonymous.call("GET", "/api/cctv_alerts")[0] == 401  # behind the login like every read
        op = _Client(server.url)
        status, _, alerts = op.call("GET", "/api/cctv_alerts")
        assert status == 200
        (a,) = alerts
        assert (a["alert_id"], a["rule"], a["zones"], a["trajectory_ids"]) == ("A-1", "loitering", ["corridor"], ["T7"])
        assert "evidence" not in a  # the list names who to look at; the evidence stays in the store
        assert a["text"] == "CCTV loitering in corridor: 1 traveller (alert A-1)"
        status, _, events = op.call("GET", "/api/timeline")
        assert status == 200
        assert [e["text"] for e in events if e["kind"] == "cctv"] == [a["text"]]
        for path in READS:  # every read of the page answers on this engine
            status, _, body = op.call("GET", path)
            assert status == 200, (path, body)
        # an operator action with who did it ("user" is a reserved word in PostgreSQL)
        action_id = record_action(conn, "olga", "operator", "ack_alarm", "AL-1", {"note": "checked"}, "done", "ok")
        status, _, acts = op.call("GET", "/api/actions")
        assert status == 200 and [(x["id"], x["user"], x["target"]) for x in acts] == [(action_id, "olga", "AL-1")]
    finally:
        server.stop()
    # the live push: a new alert stored while a browser listens is sent as a "cctv_alerts" event
    with Store(db) as store:
        live = Broadcaster(store, poll_interval_s=1.0, history=conn)
        live.clients.add(object())  # type: ignore[arg-type]  # one listener (only its presence counts)
        assert live._changes() == []  # the first poll sets the cursors
        store.save_cctv_alerts([_alert("A-2", "counter_flow", 1_796_000_100.0)])
        kinds = dict(live._changes())
        assert [r["alert_id"] for r in kinds["cctv_alerts"]] == ["A-1", "A-2"]
        assert dict(live._changes()).get("cctv_alerts") is None  # nothing new: nothing sent
    conn.close()
