"""Which optional Python package belongs to which extra of ``customs-edge``, and what to say when one is missing.

Why: units are installed by role (``pip install 'customs-edge[gamma]'`` on a mobile unit,
``[camera]`` on a camera box, ``[controller]`` at the controller; see pyproject.toml), so a gamma
unit carries neither OpenCV nor matplotlib.  A command or a profile that needs a package its
installation lacks must then say, in one line, which extra to install, not end in an ImportError
traceback or a unit that quietly runs without its spectrometer.

Probing uses :func:`importlib.util.find_spec`, which locates a package without importing it, so
``cedge agent check-config`` stays fast and opens nothing.
"""

from __future__ import annotations

import importlib.util

from agent.exit_codes import EXIT_MISSING_EXTRA

__all__ = ["EXIT_MISSING_EXTRA", "MissingExtra", "explain", "installed_extras", "missing_module", "require",
           "require_role"]

#: top-level import name -> (distribution on PyPI, extra of customs-edge that installs it)
PROVIDER: dict[str, tuple[str, str]] = {
    "numba": ("numba", "gamma"),
    "llvmlite": ("numba", "gamma"),
    "serial": ("pyserial", "gamma"),
    "usb": ("pyusb", "gamma"),
    "pynmea2": ("pynmea2", "gamma"),
    "lxml": ("lxml", "gamma"),
    "cv2": ("opencv-python-headless", "camera"),
    "ai_edge_litert": ("ai-edge-litert", "camera"),
    "tflite_runtime": ("ai-edge-litert", "camera"),
    "starlette": ("starlette", "controller"),
    "uvicorn": ("uvicorn", "controller"),
    "psycopg": ("psycopg", "controller"),
    "skimage": ("scikit-image", "sim"),
    "matplotlib": ("matplotlib", "sim"),
    "SpecUtils": ("sandiaspecutils", "files"),
    "becquerel": ("becquerel", "bench"),
    "atheris": ("atheris", "bench"),
}

#: What a unit of each type imports beyond the core, whatever its drivers (its analysis).
ROLE_MODULES: dict[str, tuple[str, ...]] = {
    "mobile": ("numba", "lxml"),
    "handheld": ("numba", "lxml"),
    "camerabox": ("cv2",),
    "cctv": ("cv2",),
}


class MissingExtra(ImportError):
    """An optional package is not installed; the message names the extra that brings it."""

    def __init__(self, module: str, needed_for: str) -> None:
        self.module = module
        self.extra = PROVIDER.get(module, (module, "all"))[1]
        dist = PROVIDER.get(module, (module, "all"))[0]
        super().__init__(f"{needed_for} needs the Python package {dist} (import {module}), which this "
                         f"installation lacks: pip install 'customs-edge[{self.extra}]'", name=module)


def missing_module(err: ImportError) -> str | None:
    """The optional package behind ``err`` (a top-level import name in :data:`PROVIDER`), or None
    when ``err`` is not about one of them (a bug or a broken installation: let it surface)."""
    name = (getattr(err, "name", None) or "").split(".")[0]
    return name if name in PROVIDER else None


def explain(err: ImportError, needed_for: str) -> MissingExtra | None:
    """A :class:`MissingExtra` for ``err`` if it is about an optional package, else None."""
    if isinstance(err, MissingExtra):
        return err
    module = missing_module(err)
    return MissingExtra(module, needed_for) if module else None


def require(module: str, needed_for: str) -> None:
    """Raise :class:`MissingExtra` if ``module`` cannot be found (without importing it)."""
    if importlib.util.find_spec(module) is None:
        raise MissingExtra(module, needed_for)


def require_role(unit_type: str) -> None:
    """Raise :class:`MissingExtra` if the analysis of a ``unit_type`` unit cannot be imported here."""
    for module in ROLE_MODULES.get(unit_type, ()):
        require(module, f"a {unit_type} unit")


def installed_extras() -> list[str]:
    """The role extras whose packages are all importable here (what `cedge --version` reports)."""
    extras: dict[str, list[str]] = {}
    for module, (_, extra) in PROVIDER.items():
        if module not in ("llvmlite", "tflite_runtime", "ai_edge_litert"):  # platform-dependent or implied
            extras.setdefault(extra, []).append(module)
    return [extra for extra, modules in extras.items()
            if all(importlib.util.find_spec(m) is not None for m in modules)]
