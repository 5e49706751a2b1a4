"""A CCTV camera unit end to end (issue 19): ``cedge agent run`` with ``unit_type: cctv`` reads a
recorded hall video through the OpenCV camera driver, runs the people-tracking chain and publishes
anonymous ``tracklet`` messages over a real Mosquitto; a subscriber decodes them with the wire schema.

The clip is rendered by the hall simulator (hal_sim.hall) with its calibration, so the tracklets'
ground positions can be checked against where the simulated travellers walked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from broker_fixture import Mosquitto

pytest.importorskip("cv2")
pytest.importorskip("jupedsim")

from agent.wire_schema import Tracklet, decode_uplink  # noqa: E402

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]
DEADLINE_S = 150.0


def _clip(tmp_path: Path) -> Path:
    from hal_sim.hall import HallScenario, default_hall_path, load_hall, run_scenario, write_clip

    plan = load_hall(default_hall_path())
    run = run_scenario(HallScenario(seed=3, duration_s=20.0, travellers_per_hour=1500, scripted=()), plan)
    return write_clip(tmp_path / "clip", run, camera_ids=["c1"])


def test_cctv_unit_publishes_tracklets_from_a_recorded_camera(tmp_path: Path, mosquitto: Mosquitto) -> None:
    clip = _clip(tmp_path)
    profile = {
        "schema": 1, "unit_id": "cctv-1", "unit_type": "cctv",
        "site": {"name": "hall", "origin_lat_deg": 51.95, "origin_lon_deg": 4.05},
        "devices": {"camera": {"driver": "opencv",
                               "params": {"source": str(clip / "c1" / "video.avi"), "loop_file": True}}},
        "cctv": {"camera_id": "c1", "calibration_file": str(clip / "calib.json"),
                 "pipeline": {"publish_interval_s": 1.0}},
        "broker": {"host": mosquitto.host, "port": mosquitto.port},
    }
    path = tmp_path / "cctv-1.yaml"
    path.write_text(yaml.safe_dump(profile))
    got: list[Tracklet] = []
    lock = threading.Lock()

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        env, body = decode_uplink(m.topic, m.payload)
        if env.kind == "tracklet":
            with lock:
                got.append(body)

    sub = mosquitto.client(None, client_id="cctv-test-sub")
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("cedge/v1/up/cctv-1/#", qos=1)
    sub.on_message = on_message
    sub.connect(mosquitto.host, mosquitto.port)
    sub.loop_start()
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "cedge", "agent", "run", "--profile", str(path),
                             "--state-dir", str(tmp_path / "state")], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        end = time.monotonic() + DEADLINE_S
        # the 20 s clip plays in real time; wait for tracks that ended (a person who walked out of view)
        while time.monotonic() < end and proc.poll() is None:
            with lock:
                if sum(t.state == "ended" for t in got) >= 2:
                    break
            time.sleep(0.5)
        assert proc.poll() is None, (tmp_path / "agent.log").read_text(errors="replace")[-3000:]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        sub.loop_stop()
        sub.disconnect()
    text = (tmp_path / "agent.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    with lock:
        tracklets = list(got)
    assert sum(t.state == "ended" for t in tracklets) >= 2, (len(tracklets), text[-2000:])
    assert {t.camera_id for t in tracklets} == {"c1"}
    samples = [s for t in tracklets for s in t.samples]
    assert len(samples) >= 10
    # ground positions on the hall's floor, within a metre (the calibration put them there, not pixels)
    from shapely.geometry import Point

    from hal_sim.hall import default_hall_path, load_hall

    floor = load_hall(default_hall_path()).free_space.buffer(1.0)
    inside = sum(floor.covers(Point(s.x_m, s.y_m)) for s in samples)
    assert inside >= 0.9 * len(samples), (inside, len(samples))
