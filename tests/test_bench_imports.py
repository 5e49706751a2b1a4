"""Every benchmark module imports.  Why: most benchmarks run only by hand (minutes to hours), so a
helper renamed in one module broke `cedge bench console` for a whole session without any test noticing."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import cedge.bench

MODULES = sorted(m.name for m in pkgutil.iter_modules(cedge.bench.__path__, "cedge.bench."))


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_module_imports(name: str) -> None:
    pytest.importorskip("cv2")  # the camera and CCTV benchmarks need the camera extra
    importlib.import_module(name)
