"""Who may say what on the uplink (issue 14, item 2; rows 2 and 3), at the controller.

Units that are not enrolled are rejected ``unit_not_enrolled``, counted and never become units (the
site registry is re-read when ``cedge site enroll/revoke`` changes it); a task event is accepted
only from the unit the task was dispatched to, for a command the controller sent it (row 2: a
forged "cleared" for another unit's task is rejected and logged, the task stays with its handheld).
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.wire_schema import (
    Birth,
    Command,
    DispatchTask,
    Measurement,
    Position,
    SensorHealth,
    TaskEvent,
    encode,
    make_envelope,
    uplink_topic,
)
from controller.config import ConfigError, controller_config_from_dict
from controller.enrolment import Enrolment, EnrolmentError
from controller.ingest import Ingestor
from controller.store import Store

T0 = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)
POS = Position(lat_deg=51.95, lon_deg=4.05, alt_m=5.0, x_m=1.0, y_m=2.0, z_m=1.5, fix_quality=7)


class FakeClock:
    t = 0.0
    rate = 1.0
    utc_valid = True

    def monotonic_s(self) -> float:
        return self.t

    def utc_now(self) -> datetime:
        return T0 + timedelta(seconds=self.t)


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def msg(unit: str, kind: str, body, seq: int, boot: str = "boot-0000-0001") -> tuple[str, bytes]:
    return uplink_topic(unit, kind), encode(make_envelope(kind, unit, boot, seq, iso(T0), 1.0, True, body))


def birth(unit: str, unit_type: str = "mobile") -> tuple[str, bytes]:
    return msg(unit, "birth", Birth(unit_type=unit_type, profile="p", software_version="0.1", site="yard",
                                    sensors={"gamma": SensorHealth(state="ok")}), 0)


def meas(unit: str, seq: int = 1) -> tuple[str, bytes]:
    return msg(unit, "measurement", Measurement(interval_s=1.0, live_time_s=1.0, gross_counts=10, gross_cps=10.0,
                                                detector_model="NaI"), seq)


def registry(path: Path, units: list[str]) -> Path:
    path.write_text("schema: 1\nsite_name: yard\nunits:\n" + "".join(f"  - {u}\n" for u in units))
    return path


# ------------------------------------------------------------------------------ enrolment
def test_units_not_enrolled_are_rejected_counted_and_never_created(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    with Store(tmp_path / "c.sqlite") as store:
        ing = Ingestor(store, clock=FakeClock(), enrolment=Enrolment(units=["mob-1"]))
        assert ing.handle(*birth("mob-1")) == "stored"
        assert ing.handle(*meas("mob-1")) == "stored"
        with caplog.at_level(logging.WARNING, logger="controller.ingest"):
            # row 3: a forged unit id, a stranger's birth, and 566 phantom ids (row 10)
            assert ing.handle(*birth("mob-9")) == "rejected"
            assert ing.handle(*meas("mob-9")) == "rejected"
            for i in range(566):
                ing.handle(*meas(f"phantom-{i}"))
        assert [u["unit_id"] for u in store.list_units()] == ["mob-1"]
        assert store.reject_counts() == {"unit_not_enrolled": 568}
        counters = {(c["name"], c["unit_id"]): c["value"] for c in store.counts()["counters"]}
        assert counters[("unit_not_enrolled", "mob-9")] == 2
        assert any("unit_not_enrolled" in r.getMessage() and "mob-9" in r.getMessage() for r in caplog.records)
        assert len([r for r in caplog.records if "unit_not_enrolled" in r.getMessage()]) < 5  # rate-limited


def test_enrolment_file_is_reread_on_enroll_and_revoke(tmp_path: Path) -> None:
    path = registry(tmp_path / "enrolled.yaml", ["mob-1"])
    enrol = Enrolment(file=path, reload_interval_s=0.0)
    assert enrol.is_enrolled("mob-1") and not enrol.is_enrolled("hh-1")
    registry(path, ["mob-1", "hh-1"])
    os.utime(path, (1e9, 1e9))  # a new mtime even on a coarse-grained file system
    assert enrol.is_enrolled("hh-1")
    registry(path, ["hh-1"])  # mob-1 revoked
    os.utime(path, (2e9, 2e9))
    assert not enrol.is_enrolled("mob-1")
    path.write_text("units: [unterminated")  # a half-written file keeps the last good list
    os.utime(path, (3e9, 3e9))
    assert enrol.units == {"hh-1"}
    bare = tmp_path / "list.yaml"
    bare.write_text("- cam-1\n- hh-2\n")
    assert Enrolment(file=bare).units == {"cam-1", "hh-2"}
    with pytest.raises(EnrolmentError):
        Enrolment(file=tmp_path / "missing.yaml")


def test_controller_config_enrolment_switches() -> None:
    assert not controller_config_from_dict({}).enrolment_required
    assert controller_config_from_dict({"enrolled_units": ["mob-1"]}).enrolment_required
    assert controller_config_from_dict({"enrolled_units_file": "x.yaml"}).enrolment_required
    with pytest.raises(ConfigError, match="neither enrolled_units"):
        controller_config_from_dict({"require_enrolment": True})
    with pytest.raises(ConfigError, match="require_enrolment is false"):
        controller_config_from_dict({"require_enrolment": False, "enrolled_units": ["mob-1"]})


# ------------------------------------------------------------------------------ task events (row 2)
def test_task_events_only_from_the_dispatched_unit_for_an_issued_command(tmp_path: Path) -> None:
    with Store(tmp_path / "c.sqlite") as store:
        ing = Ingestor(store, clock=FakeClock())
        for unit in ("hh-1", "hh-2"):
            assert ing.handle(*birth(unit, "handheld")) == "stored"
        store.record_command(Command(
            cmd_id="c-1", unit_id="hh-1", command="dispatch", t_utc=iso(T0),
            task=DispatchTask(task_id="T-1", alarm_id="A-1", target=POS, radius_m=5.0, dwell_s=60.0)))

        def event(unit: str, seq: int, task_id: str = "T-1", cmd_id: str = "c-1", state: str = "cleared") -> str:
            return ing.handle(*msg(unit, "task_event", TaskEvent(task_id=task_id, cmd_id=cmd_id, state=state), seq))

        # row 2: another unit claims the task is cleared
        assert event("hh-2", 1) == "rejected"
        assert event("hh-1", 1, cmd_id="c-forged") == "rejected"  # a cmd_id never sent
        assert event("hh-1", 2, task_id="T-other") == "rejected"  # a task never dispatched to it
        assert store.count("task_events") == 0
        assert store.reject_counts() == {"task_not_issued": 3}
        # the real handheld's events for its own dispatch go through
        assert event("hh-1", 3, state="accepted") == "stored"
        assert event("hh-1", 4, state="confirmed") == "stored"
        assert [e["state"] for e in store.list_task_events("T-1")] == ["accepted", "confirmed"]


def test_commands_refused_by_a_unit_are_logged_and_counted_at_the_controller(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from agent.wire_schema import Health

    def health(seq: int, refused: int) -> tuple[str, bytes]:
        return msg("hh-1", "health", Health(uptime_s=seq, cpu_pct=1.0, mem_rss_mb=50.0, outbox_pending=0,
                                            queue_depth={}, loop_lag_ms=1.0, sensors={},
                                            commands_rejected=refused), seq)

    with Store(tmp_path / "c.sqlite") as store:
        ing = Ingestor(store, clock=FakeClock())
        ing.handle(*birth("hh-1", "handheld"))
        with caplog.at_level(logging.WARNING, logger="controller.ingest"):
            for seq, refused in ((1, 0), (2, 3), (3, 3), (4, 5)):
                assert ing.handle(*health(seq, refused)) == "stored"
                ing.clock.t += 60.0  # past the log rate limit
        counters = {(c["name"], c["unit_id"]): c["value"] for c in store.counts()["counters"]}
        assert counters[("commands_refused_by_unit", "hh-1")] == 5
        lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(lines) == 2 and "refused 3 more" in lines[0] and "refused 2 more" in lines[1]
