"""Property-based fuzzing of the configuration loaders (issue 14, item 6).

A unit profile, the controller config and a scenario are files a person edits, copies and
mis-types, and that a compromised USB stick could replace. Whatever they hold, loading must end
in the loader's own error naming the file (:class:`ConfigError`; :class:`ScenarioError` is one)
or in a validated configuration - never a traceback, never an alias bomb expanded in memory.

Inputs: arbitrary text, arbitrary YAML documents (generated structures dumped as YAML), and the
shipped configuration files with one value replaced by junk. Reproducible (``derandomize=True``,
no example database), modest example counts.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import ConfigError, load_profile
from agent.safe_yaml import MAX_YAML_NODES, YamlError, load_yaml_bytes
from controller.config import load_controller_config
from hal_sim.scenario import load_scenario

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = {
    "profile": CONFIGS / "units" / "mobile.yaml",
    "controller": CONFIGS / "controller.yaml",
    "scenario": CONFIGS / "scenarios" / "demo_yard.yaml",
}
LOADERS: dict[str, Callable[[Path], Any]] = {
    "profile": load_profile,
    "controller": lambda p: load_controller_config(p, env={}),
    "scenario": load_scenario,
}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=20))
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=25,
)
junk_values = st.one_of(scalars, st.sampled_from(
    [[], {}, "..", "-1", -1, 1e308, float("nan"), float("inf"), "2026-13-45", "x" * 2000, {"a": [1, {"b": None}]}]))
yaml_junk = st.sampled_from([
    "a: &a [1, *a]", "a: 2026-13-45", "x: " + "1" * 5000, "[" * 3000, "- " * 200 + "x", "!!python/object:os.system x",
    "!!binary AAAA", "? [a, b]\n: 1", "a: !!float nan", "{a: 1, a: 2}", "\ufeffschema: 1", "%YAML 9.9\n---\na: 1",
    "a: *undefined", "--- 1\n--- 2", "\x00", "a:\n\tb: 1",
])


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _load(kind: str, path: Path, text: str | bytes) -> None:
    path.write_bytes(text.encode("utf-8", errors="surrogatepass") if isinstance(text, str) else text)
    try:
        LOADERS[kind](path)
    except ConfigError as err:
        assert str(path) in str(err) or path.name in str(err), err


@FUZZ
@given(kind=st.sampled_from(sorted(LOADERS)), text=st.one_of(st.text(max_size=300), yaml_junk))
def test_arbitrary_text(workdir: Path, kind: str, text: str) -> None:
    _load(kind, workdir / f"{kind}.yaml", text)


@FUZZ
@given(kind=st.sampled_from(sorted(LOADERS)), doc=documents)
def test_arbitrary_yaml_documents(workdir: Path, kind: str, doc: Any) -> None:
    _load(kind, workdir / f"{kind}.yaml", yaml.safe_dump(doc))


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):
            out += _paths(v, (*prefix, i))
    return out


def _replace(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


SHIPPED_DOCS = {k: yaml.safe_load(p.read_text()) for k, p in SHIPPED.items()}


def test_shipped_files_load() -> None:
    for kind, path in SHIPPED.items():
        assert LOADERS[kind](path) is not None


@FUZZ
@given(kind=st.sampled_from(sorted(LOADERS)), data=st.data(), new=junk_values)
def test_shipped_file_with_one_value_replaced(workdir: Path, kind: str, data: st.DataObject, new: Any) -> None:
    doc = SHIPPED_DOCS[kind]
    path = data.draw(st.sampled_from(_paths(doc)))
    _load(kind, workdir / f"{kind}.yaml", yaml.safe_dump(_replace(doc, path, new)))


@FUZZ
@given(levels=st.integers(2, 12), fan=st.integers(2, 12))
def test_alias_expansion_is_bounded(levels: int, fan: int) -> None:
    """Billion-laughs documents of any shape: refused exactly when the expansion is too large."""
    lines = ['l0: &l0 "lol"']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan)}]")
    text = "\n".join(lines)
    expanded = sum(sum(fan**j for j in range(i + 1)) + 1 for i in range(levels)) + 1  # nodes incl. keys
    try:
        load_yaml_bytes(text, "bomb.yaml")
    except YamlError as err:
        assert "alias" in str(err) and expanded > MAX_YAML_NODES, (levels, fan, expanded)
    else:
        assert expanded <= MAX_YAML_NODES * 1.01, (levels, fan, expanded)


def test_billion_laughs_profile_is_refused_quickly(workdir: Path) -> None:
    lol = ['schema: 1', 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lol += [f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    path = workdir / "bomb_profile.yaml"
    path.write_text("\n".join(lol) + "\n")
    for kind in LOADERS:
        with pytest.raises(ConfigError, match=r"bomb_profile\.yaml: expands to more than"):
            LOADERS[kind](path)


def test_huge_file_is_refused_before_reading(workdir: Path) -> None:
    path = workdir / "huge.yaml"
    with path.open("wb") as fh:
        fh.truncate(64 * 1024 * 1024)  # sparse
    try:
        with pytest.raises(ConfigError, match=r"huge\.yaml: \d+ bytes, more than"):
            load_profile(path)
    finally:
        os.unlink(path)
