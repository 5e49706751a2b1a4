"""Unit profiles: shipped examples load; mistakes are reported with the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_profile, profile_from_dict

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["mobile", "handheld", "camerabox"])
def test_shipped_profiles_load(name: str) -> None:
    prof = load_profile(ROOT / "configs" / "units" / f"{name}.yaml")
    assert prof.unit_type == name


def _base() -> dict:
    return {"schema": 1, "unit_id": "u1", "unit_type": "mobile",
            "site": {"origin_lat_deg": 51.0, "origin_lon_deg": 4.0},
            "devices": {"gamma": {"driver": "sim"}, "gnss": {"driver": "sim"}}}


def test_unknown_key_named() -> None:
    with pytest.raises(ConfigError, match="detector.treshold_sigma"):
        profile_from_dict({**_base(), "detector": {"treshold_sigma": 4}}, "x.yaml")


def test_bad_values_named() -> None:
    with pytest.raises(ConfigError, match=r"broker.port"):
        profile_from_dict({**_base(), "broker": {"port": 70000}}, "x.yaml")
    with pytest.raises(ConfigError, match="schema"):
        profile_from_dict({**_base(), "schema": 2}, "x.yaml")


def test_missing_device_for_unit_type() -> None:
    data = _base()
    del data["devices"]["gnss"]
    with pytest.raises(ConfigError, match="gnss"):
        profile_from_dict(data, "x.yaml")


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_profile(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("unit_id: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_profile(bad)


def test_env_override() -> None:
    from agent.config import apply_env

    prof = profile_from_dict(_base())
    apply_env(prof, {"CEDGE_BROKER_HOST": "10.0.0.1", "CEDGE_BROKER_PORT": "1884"})
    assert (prof.broker.host, prof.broker.port) == ("10.0.0.1", 1884)
    with pytest.raises(ConfigError, match="CEDGE_BROKER_PORT"):
        apply_env(prof, {"CEDGE_BROKER_PORT": "abc"})
