"""Optional learned person detector: a site-supplied ``.tflite`` model run with LiteRT.

Only when the site's config names a model file that is on the box: nothing is downloaded, ever (a
camera box in a customs hall has no business fetching code or weights at run time).  The model must be
an SSD-style detector with the TFLite detection post-processing outputs (boxes [1, N, 4] as ymin,
xmin, ymax, xmax normalised; classes [1, N]; scores [1, N]; count [1]), e.g. the COCO SSD MobileNet
family, where class 0 is "person".  Anything else is refused at load with what was found.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from agent.cctv.detections import Detection


class LiteRtPersonDetector:
    def __init__(self, model_path: str | Path, person_class: int = 0, min_score: float = 0.1, threads: int = 1):
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"person detector model {path} does not exist (the site supplies it; "
                                    "nothing is downloaded)")
        from ai_edge_litert.interpreter import Interpreter

        self.interp = Interpreter(model_path=str(path), num_threads=threads)
        self.interp.allocate_tensors()
        inp = self.interp.get_input_details()[0]
        self._in_index = inp["index"]
        self._in_shape = tuple(int(v) for v in inp["shape"])
        self._in_dtype = inp["dtype"]
        outs = self.interp.get_output_details()
        if len(outs) < 4 or len(self._in_shape) != 4:
            raise ValueError(f"{path}: not an SSD detector with post-processing (inputs {self._in_shape}, "
                             f"{len(outs)} outputs; want 4: boxes, classes, scores, count)")
        self._outs = [o["index"] for o in outs[:4]]
        self.person_class = person_class
        self.min_score = min_score

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        H, W = frame_bgr.shape[:2]
        _, ih, iw, _ = self._in_shape
        x = cv2.resize(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB), (iw, ih))
        if self._in_dtype == np.float32:
            x = (x.astype(np.float32) - 127.5) / 127.5
        self.interp.set_tensor(self._in_index, x[None].astype(self._in_dtype))
        self.interp.invoke()
        boxes, classes, scores, count = (self.interp.get_tensor(i) for i in self._outs)
        out = []
        for k in range(int(np.squeeze(count))):
            if int(classes[0, k]) != self.person_class or scores[0, k] < self.min_score:
                continue
            y0, x0, y1, x1 = (float(v) for v in boxes[0, k])
            w, h = (x1 - x0) * W, (y1 - y0) * H
            if w > 1 and h > 1:
                out.append(Detection(np.array([x0 * W, y0 * H, w, h]), float(scores[0, k]), "litert"))
        return out
