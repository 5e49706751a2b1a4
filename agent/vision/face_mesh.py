"""Optional 468-point face mesh from a user-provided LiteRT (TensorFlow Lite) model.

Why optional: the box works without it (Haar box + eye-region blink method).  When the operator
provides a face-landmark model -- e.g. MediaPipe's ``face_landmark.tflite`` (Kartynnik et al.,
"Real-time facial surface geometry from monocular video on mobile GPUs", CVPR Workshops 2019;
192x192 RGB input, 468 x (x, y, z) output) -- the pipeline uses its eye landmarks for the eye
aspect ratio (Soukupova & Cech 2016) instead of the eye-region method.  No model is bundled or
downloaded: the path comes from configuration, and a missing file or runtime is a clear
:class:`DeviceUnavailable`.

Runtime: ``ai_edge_litert`` (Google's LiteRT, works with numpy 2), falling back to
``tflite_runtime`` on platforms where only that wheel exists.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.hal.interfaces import DeviceUnavailable
from agent.vision.errors import VisionInputError
from agent.vision.face_tracker import Box

N_LANDMARKS = 468

_RUNTIMES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


def load_interpreter_class() -> type:
    """The LiteRT ``Interpreter`` class from the first runtime that imports."""
    errors = []
    for mod in _RUNTIMES:
        try:
            return importlib.import_module(mod).Interpreter
        except ImportError as err:
            errors.append(f"{mod}: {err}")
    raise DeviceUnavailable("face mesh: no LiteRT runtime (pip install ai-edge-litert, or tflite-runtime "
                            "where ai-edge-litert has no wheel): " + "; ".join(errors))


class FaceMesh:
    """Landmark model wrapper.  ``landmarks(frame_bgr, face_box)`` -> (468, 3) in frame pixels.

    ``input_range`` is the float range the model expects ((0, 1) for MediaPipe's face mesh).
    ``margin`` enlarges the square crop around the face box, as MediaPipe's ROI does.
    """

    def __init__(self, model_path: str | Path | None, num_threads: int = 1,
                 input_range: tuple[float, float] = (0.0, 1.0), margin: float = 0.25) -> None:
        if model_path is None or str(model_path) == "":
            raise DeviceUnavailable("face mesh: no model configured (set vision.face_mesh_model to a "
                                    "user-provided face_landmark .tflite file)")
        path = Path(model_path)
        if not path.is_file():
            raise DeviceUnavailable(f"face mesh: model file '{path}' not found")
        cls = load_interpreter_class()
        try:
            self._interp: Any = cls(model_path=str(path), num_threads=num_threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise DeviceUnavailable(f"face mesh: cannot load '{path}': {err}") from err
        inp = self._interp.get_input_details()[0]
        shape = tuple(int(v) for v in inp["shape"])
        if len(shape) != 4 or shape[3] != 3:
            raise DeviceUnavailable(f"face mesh: '{path}' input shape {shape} is not (1, H, W, 3)")
        self._in_index = inp["index"]
        self._in_dtype = inp["dtype"]
        self.input_hw = (shape[1], shape[2])
        self._lm_index = None
        for out in self._interp.get_output_details():
            size = int(np.prod(out["shape"]))
            if size >= N_LANDMARKS * 3 and size % 3 == 0:
                self._lm_index = out["index"]
                break
        if self._lm_index is None:
            raise DeviceUnavailable(f"face mesh: '{path}' has no output of >= {N_LANDMARKS} x 3 values")
        self.input_range = input_range
        self.margin = margin

    def landmarks(self, frame_bgr: np.ndarray, face: Box) -> np.ndarray:
        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
            raise VisionInputError(f"FaceMesh.landmarks: need an (H, W, 3) BGR frame, got {frame_bgr.shape}")
        x, y, w, h = face
        side = max(w, h) * (1.0 + 2 * self.margin)
        cx, cy = x + w / 2, y + h / 2
        ih, iw = self.input_hw
        # affine map crop -> model input (handles crops that leave the frame: border replicate)
        s = iw / side
        m = np.array([[s, 0.0, iw / 2 - s * cx], [0.0, ih / side, ih / 2 - ih / side * cy]], np.float32)
        crop = cv2.warpAffine(frame_bgr, m, (iw, ih), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        if np.issubdtype(self._in_dtype, np.floating):
            lo, hi = self.input_range
            tensor = (rgb.astype(np.float32) / 255.0 * (hi - lo) + lo)[None]
        else:
            tensor = rgb[None].astype(self._in_dtype)
        self._interp.set_tensor(self._in_index, tensor)
        self._interp.invoke()
        raw = np.asarray(self._interp.get_tensor(self._lm_index), dtype=np.float32).reshape(-1, 3)[:N_LANDMARKS]
        out = np.empty_like(raw)
        out[:, 0] = (raw[:, 0] - (iw / 2 - s * cx)) / s
        out[:, 1] = (raw[:, 1] - (ih / 2 - ih / side * cy)) / (ih / side)
        out[:, 2] = raw[:, 2] / s
        return out
