"""Site files of the localizer: validated at load, and the shipped demo site is the demo yard."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.config import LocalizationConfig
from controller.localization import SiteError, load_site, site_from_dict

ROOT = Path(__file__).resolve().parents[1]
BASE = {"schema": 1, "container": {"length_m": 12.19, "width_m": 2.44, "height_m": 2.59},
        "rows": [{"id": "A", "x0_m": 0.0, "y0_m": 0.0, "n_bays": 3, "stack": 2}]}


def test_demo_site_matches_the_demo_scenario_yard() -> None:
    from hal_sim.scenario import load_scenario
    from hal_sim.yard import Yard

    site = load_site(ROOT / "configs" / "sites" / "demo_yard.yaml")
    yard = Yard.from_scenario(load_scenario(ROOT / "configs" / "scenarios" / "demo_yard.yaml"))
    cols = {c.label: c for c in site.columns}
    for box in yard.boxes:
        col = cols[box.label]
        assert col.lo[:2] == pytest.approx(box.lo[:2]) and col.hi[:2] == pytest.approx(box.hi[:2])
        assert col.hi[2] >= box.hi[2] - 1e-9
    assert len(cols) == len({b.label for b in yard.boxes})
    assert site.z_max_m == pytest.approx(2 * 2.59)
    assert site.origin == (51.95, 4.05, 5.0)


@pytest.mark.parametrize("change, message", [
    ({"rows": [{"id": "A", "x0_m": 0, "y0_m": 0, "n_bays": 3, "stack": 2, "colour": "red"}]}, "colour"),
    ({"rows": [{"id": "A", "x0_m": 0, "y0_m": 0, "n_bays": 3}]}, "either stack"),
    ({"rows": [{"id": "A", "x0_m": 0, "y0_m": 0, "n_bays": 3, "stacks": [1, 2]}]}, "n_bays is 3"),
    ({"rows": [{"id": "A", "x0_m": 0, "y0_m": 0, "n_bays": 3, "stack": 1},
               {"id": "B", "x0_m": 5, "y0_m": 1, "n_bays": 1, "stack": 1}]}, "overlap"),
    ({"schema": 2}, "schema"),
    ({"container": {"length_m": 12.19, "width_m": 2.44, "height_m": -1}}, "height_m"),
])
def test_bad_site_files_are_refused_naming_the_key(change: dict, message: str) -> None:
    with pytest.raises(SiteError, match=message):
        site_from_dict({**BASE, **change}, "site.yaml")


def test_per_bay_stacks_and_cargo_groups() -> None:
    site = site_from_dict({**BASE, "rows": [{"id": "A", "x0_m": 0, "y0_m": 0, "n_bays": 3, "stacks": [1, 0, 4],
                                             "bay_cargo_groups": ["x", "x", "reefer"]}]})
    assert [c.label for c in site.columns] == ["A-1", "A-3"]  # an empty bay has no column
    assert site.z_max_m == pytest.approx(4 * 2.59)
    assert site.groups == ("x", "reefer")
    assert site.column_at(30.0, 1.0) == 1 and site.column_at(15.0, 1.0) is None


def test_controller_config_checks_the_site_file(tmp_path: Path) -> None:
    assert LocalizationConfig(site_file=str(ROOT / "configs" / "sites" / "demo_yard.yaml")).site_file
    bad = tmp_path / "site.yaml"
    bad.write_text("schema: 1\ncontainer: {length_m: 12}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="site_file"):
        LocalizationConfig(site_file=str(bad))
