"""Read-only view of a running controller's database, for the demo's progress line and summary.

It opens the controller's SQLite file through :class:`controller.store.Store` (WAL lets it read
while the controller writes) and never writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controller.store import Store, StoreError


class FleetView:
    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self._store: Store | None = None

    def _open(self) -> Store | None:
        if self._store is None and self.db_path.exists():
            try:
                self._store = Store(self.db_path, create=False)
            except StoreError:
                return None  # the controller has not created its schema yet
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def snapshot(self) -> dict[str, Any]:
        st = self._open()
        if st is None:
            return {"units_online": 0, "messages_stored": 0, "alarms": 0, "task_states": ""}
        return {
            "units_online": st.unit_state_counts().get("online", 0),
            "messages_stored": st.count("received"),
            "alarms": st.count("alarms"),
            "task_states": ",".join(t["state"] for t in st.list_tasks()),
        }

    def summary(self) -> dict[str, Any]:
        st = self._open()
        if st is None:
            return {"alarms": [], "tasks": [], "source_estimate": None, "messages_stored": 0,
                    "messages_rejected": 0, "units": [], "gaps": []}
        alarms = [{k: a.get(k) for k in ("alarm_id", "unit_id", "detector", "significance_sigma", "peak_cps",
                                          "background_cps", "t_peak_utc", "x_m", "y_m", "z_m", "incident_id",
                                          "delivery")}
                  for a in st.list_alarms()]
        tasks = []
        for t in st.list_tasks():
            tasks.append({
                "task_id": t["task_id"], "state": t["state"], "unit_id": t.get("unit_id"),
                "incident_id": t.get("incident_id"), "attempts": t.get("attempts"),
                "target": {"x_m": t.get("target_x_m"), "y_m": t.get("target_y_m"), "z_m": t.get("target_z_m")},
                "result": t.get("result"),
                "history": [{"state": h.get("state"), "t_utc": h.get("t_utc"),
                             **({"position": h["position"]} if h.get("position") else {})}
                            for h in (t.get("history") or [])],
            })
        estimate = None
        incidents = st.list_incidents()
        if incidents:
            # the incident the fleet acted on: a confirmed task first, then the one with most alarms
            # (the first opened was a NORM false alarm in some runs, and its estimate is not the source's)
            confirmed = {t["incident_id"] for t in tasks if t["state"] == "confirmed"}
            inc = max(incidents, key=lambda i: (i["incident_id"] in confirmed, len(i.get("alarms") or [])))
            est = inc.get("estimate") or {}
            if est.get("x_m") is not None:
                cov = est.get("cov")
                estimate = {
                    "incident_id": inc["incident_id"], "x_m": est["x_m"], "y_m": est["y_m"], "z_m": est["z_m"],
                    "sigma_x_m": est.get("sigma_x_m"), "sigma_y_m": est.get("sigma_y_m"),
                    "sigma_z_m": est.get("sigma_z_m"), "sigma_xy_m": est.get("sigma_xy_m"),
                    "cov_xy": [row[:2] for row in cov[:2]] if cov else None,
                    "n_measurements": est.get("n_measurements"), "n_units": est.get("n_units"),
                    "ambiguous": est.get("ambiguous"),
                    "z_resolved": est.get("z_resolved"), "z_interval_m": est.get("z_interval_m"),
                    "height_note": est.get("height_note"), "column": est.get("column"),
                    "n_sources": est.get("n_sources"),
                }
        counts = st.counts()
        return {
            "alarms": alarms,
            "tasks": tasks,
            "source_estimate": estimate,
            "incidents": len(incidents),
            "messages_stored": st.count("received"),
            "messages_stored_per_unit": counts["messages_per_unit"],
            "messages_rejected": sum(counts["rejects"].values()),
            "gaps": counts["gaps"],
            "units": [{"unit_id": u["unit_id"], "unit_type": u.get("unit_type"), "state": u.get("state")}
                      for u in st.list_units()],
            "vitals_messages": st.count("vitals"),
            "vitals": [{k: v.get(k) for k in ("unit_id", "track_id", "t_utc", "heart_rate_bpm", "hr_quality",
                                               "respiration_rate_bpm", "blink_rate_per_min", "abnormal_score",
                                               "alert")}
                       for v in st.list_vitals(latest_per_track=True)],
        }

    def tracks(self) -> dict[str, dict[str, Any]]:
        """Per unit: positions and count rates in time order (for the picture)."""
        st = self._open()
        if st is None:
            return {}
        types = {u["unit_id"]: u.get("unit_type") for u in st.list_units()}
        rows = st.query("SELECT unit_id, x_m, y_m, gross_cps FROM measurements "
                        "WHERE x_m IS NOT NULL ORDER BY t_epoch_s")
        out: dict[str, dict[str, Any]] = {}
        for r in rows:
            tr = out.setdefault(r["unit_id"], {"x": [], "y": [], "cps": [],
                                               "unit_type": types.get(r["unit_id"], "mobile")})
            tr["x"].append(r["x_m"])
            tr["y"].append(r["y_m"])
            tr["cps"].append(r["gross_cps"])
        return out
