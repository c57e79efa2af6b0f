"""The evaluation's measuring step as it was before it was made fast (commit cf8b4be): every view
measured on its own, dlib's descriptor by dlib's own network one view at a time, SSIM and MS-SSIM
computed apart, the JPEG 95 round trip of M done twice.

Kept as the yardstick of the fast path in metrics/evaluation.py: tests/test_evaluate.py checks that
both give the same report, and bench/evaluate.py times both in one run. Nothing else uses it.
It measures only the figures that existed then (no YuNet detection, no sharpness)."""
from __future__ import annotations

from collections import OrderedDict

import torch

from models.passwords import complement
from results.inference_pages import InferenceError, Runner
from utils.images import to_uint8

from . import quality
from .baselines import BASELINES
from .stages import StageTimer
from .views import DETECTION_VIEWS, EXAMPLE_VIEWS, JPEG_QUALITIES, ORIGINAL, SAVED_JPEG


@torch.no_grad()
def measure_batch_reference(run: Runner, b: dict, L: int, seed: int, recognisers: dict, detectors: dict, m,
                            examples: int, inception=None, timer: StageTimer | None = None):
    """All views of one batch and their per-image measurements; returns M and p (for the attack)."""
    from .evaluation import face_detected, view_passwords

    t = timer or StageTimer()
    detector = detectors["dlib"]
    I = b["image"].to(run.device)
    lm = b["landmarks"]
    if not torch.isfinite(lm).all():
        bad = [p for p, ok in zip(b["path"], torch.isfinite(lm).flatten(1).all(1)) if not ok]
        raise InferenceError(f"the evaluation needs five landmarks for every image; none for {bad[:3]}")
    p, p2, w1, w2 = view_passwords(b["index"].tolist(), L, seed)
    with t("generator"):
        M = run(I, p)
        views = OrderedDict([(ORIGINAL, I), ("anonymized", M), ("second anonymization", run(I, p2)),
                             ("recovered", run(M, complement(p)))])
    for q in JPEG_QUALITIES:
        with t("jpeg"):
            Mq = quality.jpeg_round_trip(M, q)
        with t("generator"):
            views[f"recovered (M as JPEG q{q})"] = run(Mq, complement(p))
    with t("generator"):
        views["wrong recovery 1"] = run(M, w1)
        views["wrong recovery 2"] = run(M, w2)
    with t("jpeg"):
        M_jpeg = quality.jpeg_round_trip(M, SAVED_JPEG)
    views[f"anonymized (JPEG q{SAVED_JPEG})"] = M_jpeg
    with t("generator"):
        views[f"wrong recovery 1 (M as JPEG q{SAVED_JPEG})"] = run(M_jpeg, w1)
        views[f"wrong recovery 2 (M as JPEG q{SAVED_JPEG})"] = run(M_jpeg, w2)
    with t("baselines"):
        for base in BASELINES:
            views[base.name] = base(I, lm)
    with t("quality"):
        for name, x in views.items():
            if name == ORIGINAL:
                continue
            q = m.quality.setdefault(name, {"psnr": [], "ssim": [], "ms_ssim": []})
            q["psnr"] += quality.psnr(x, I).tolist()
            q["ssim"] += quality.ssim(x, I).tolist()
            q["ms_ssim"] += quality.ms_ssim(x, I).tolist()
    for rname, rec in recognisers.items():
        with t(f"recogniser {rname}"):
            store = m.embeddings.setdefault(rname, {})
            for name, x in views.items():
                store.setdefault(name, []).append(rec.embed(x, lm))
    if inception is not None:
        with t("fid features"):
            for name in DETECTION_VIEWS + tuple(bl.name for bl in BASELINES):
                m.fid.setdefault(name, []).append(inception(views[name]))
    with t("examples"):
        u8 = {name: to_uint8(x) for name, x in views.items()}
    with t("detection dlib"):
        for name in DETECTION_VIEWS + tuple(bl.name for bl in BASELINES):
            m.detected.setdefault(name, []).extend(face_detected(detector, u8[name][i], lm[i])
                                                   for i in range(len(I)))
    with t("examples"):
        for i in range(len(I)):
            if len(m.examples) < examples:
                m.examples.append([u8[name][i] for name in EXAMPLE_VIEWS + tuple(bl.name for bl in BASELINES)])
                m.example_titles.append(b["path"][i])
    m.labels += b["label"].tolist()
    m.indices += b["index"].tolist()
    m.paths += list(b["path"])
    return M, p
