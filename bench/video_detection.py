"""Where pass 1's detection time goes on the video bench's clip: whole-frame searches against crop
refinements, for one or more ``search_every`` settings, on one thread, without the generator.

    python bench/video_detection.py [--faces 3] [--frames 60] [--search-every 8 16]

Printed per setting: the number of searches and refinements with their ms per call, detection's
seconds, and the tracks and detections found (the same clip for every setting, so a setting that
finds fewer is visible here; recall on turning and walking-in faces is bench/anonymize.py --recall).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch and yuface load their OpenMP runtimes
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from anonymize import cpu_flags, load, make_video  # noqa: E402  (bench/anonymize.py)
from protect.face_detect import make_detector  # noqa: E402
from protect.video import VideoOptions, _decoded, follow_faces  # noqa: E402
from protect.video_io import VideoReader  # noqa: E402


def timed(detector, name: str, seconds: dict, calls: dict) -> None:
    """Wrap ``detector.<name>`` so that its calls and time are counted."""
    inner = getattr(detector, name)

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - t
            calls[name] += 1
    setattr(detector, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=3)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--search-every", type=int, nargs="+", default=[8, 16])
    args = ap.parse_args()
    print(f"CPU: {cpu_flags()}; load {load()}; one thread, threads off")
    with tempfile.TemporaryDirectory() as folder:
        clip = os.path.join(folder, "clip.mp4")
        make_video(clip, args.faces, args.frames)
        for every in args.search_every:
            detector = make_detector("yunet")
            seconds, calls = defaultdict(float), defaultdict(int)
            for name in ("search", "refine"):
                timed(detector, name, seconds, calls)
            opt = VideoOptions(search_every=every, progress=False, threads=False)
            timings = defaultdict(float)
            step = opt.detect_every
            with VideoReader(clip) as reader:
                frames = _decoded(reader, lambda i, step=step: i % step == 0, [0.0])
                tracker, seen, _ = follow_faces(detector, frames, reader.info.fps, opt, timings,
                                                reader.info.frame_count)
            paths = tracker.paths(seen)
            per_call = ", ".join(f"{k} {calls[k]} x {1000 * seconds[k] / max(calls[k], 1):.1f} ms"
                                 for k in ("search", "refine"))
            print(f"search_every {every}: detection {timings['detect']:.2f} s for {seen} frames "
                  f"({1000 * timings['detect'] / seen:.0f} ms a frame); {per_call}; "
                  f"{len(paths)} tracks, {sum(len(p.detected) for p in paths)} detections")


if __name__ == "__main__":
    main()
