"""The evaluation run behind evaluate.py: the views of every test face, their measurements, and the
summary that report.py writes.

For each test face I (in [-1, 1], with its five landmarks) and passwords drawn from (seed, image
index) -- so a face's results never depend on its batch or on which other faces are evaluated:

    M = G(I, p), M2 = G(I, p2), R = G(M, ~p), WR1 = G(M, w1), WR2 = G(M, w2),
    R_jpeg95 = G(JPEG95(M), ~p), R_jpeg75 = G(JPEG75(M), ~p),

and the baselines of metrics.baselines applied to I. G runs in inference mode, in float32.
"""
from __future__ import annotations

import os
import platform
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

import datasets
from models.passwords import complement, draw_step_passwords
from protect.face_detect import DlibDetector
from results.inference_pages import (
    PROJECT_ROOT,
    InferenceError,
    Runner,
    batches,
    choose_images,
    image_generator,
    load_generator,
    load_test_split,
    new_folder,
)
from training.checkpoint import CheckpointError, load_checkpoint
from training.distributed import pick_device
from utils.config import SCHEMA, Config, ConfigError, check_number, load_yaml, make_config
from utils.fileio import unwritable
from utils.images import to_uint8
from utils.machine import busy_cores

from . import quality
from .attack import password_attack
from .baselines import BASELINES, REGION_SCALE, face_box
from .cache import MeasureCache, image_keys
from .recognisers import (
    DLIB_THRESHOLD,
    DlibRecogniser,
    SmallRecogniser,
    SphereFaceRecogniser,
    calibrate,
    original_pairs,
    pairwise,
    train_small_recogniser,
    verification,
)
from .reference import measure_batch_reference
from .stages import StageTimer
from .views import DETECTION_VIEWS, DIVERSITY_PAIRS, EXAMPLE_VIEWS, JPEG_QUALITIES, ORIGINAL, SAVED_JPEG

SMOKE_YAML = os.path.join(PROJECT_ROOT, "config", "smoke.yaml")
MAIN_YAML = os.path.join(PROJECT_ROOT, "config", "main.yaml")
SYNTHETIC_KEYS = ("data_root", "synthetic_dir", "synthetic_identities", "synthetic_images_per_id", "synthetic_seed")


@dataclass
class Options:
    checkpoint: str
    dataset: str
    out: str
    data_root: str | None = None
    config: str | None = None
    max_images: int | None = None
    batch_size: int = 16
    device: str = "auto"
    seed: int = 0
    recogniser: str | None = None
    recogniser_epochs: int = 12
    no_dlib: bool = False
    attack_images: int = 16
    attack_candidates: int = 256
    examples: int = 8
    fid_weights: str | None = None
    progress: bool = True
    reference: bool = False  # measure with metrics/reference.py, the code before it was made fast (tests, bench)
    threads: int | None = None  # CPU threads; None: OMP_NUM_THREADS if set, else the idle cores (idle_threads)
    cache: bool | str = True  # keep what depends on the data alone (metrics/cache.py): True, a file, or False


@dataclass
class Measured:
    """Everything measured per image, before summarising."""
    labels: list = field(default_factory=list)
    indices: list = field(default_factory=list)
    paths: list = field(default_factory=list)
    quality: dict = field(default_factory=dict)      # view -> metric -> list
    embeddings: dict = field(default_factory=dict)   # recogniser -> view -> list of arrays
    detected: dict = field(default_factory=dict)     # view -> list of bool (dlib HOG)
    yunet: dict = field(default_factory=dict)        # view -> list of bool (YuNet, anonymize.py's detector)
    sharpness: dict = field(default_factory=dict)    # view -> list of Laplacian-variance ratios to the original
    fid: dict = field(default_factory=dict)          # view -> list of Inception feature arrays
    examples: list = field(default_factory=list)     # rows of uint8 images
    example_titles: list = field(default_factory=list)


# ---- setup --------------------------------------------------------------------------------------

def evaluation_config(ckpt: dict, dataset: str, config_path: str | None, data_root: str | None) -> Config:
    """The settings of the evaluation: --config, else the checkpoint's own, else config/main.yaml (the
    authors' files carry none). For --dataset synthetic with a checkpoint not trained on synthetic
    faces, the synthetic data of config/smoke.yaml."""
    if config_path:
        cfg = make_config(config_path)
    elif isinstance(ckpt.get("config"), dict):
        cfg = make_config(None, **{k: v for k, v in ckpt["config"].items() if k in SCHEMA})
    else:
        cfg = make_config(MAIN_YAML)
    if dataset == "synthetic" and cfg.dataset != "synthetic":
        smoke = load_yaml(SMOKE_YAML)
        for key in SYNTHETIC_KEYS:
            cfg[key] = smoke[key]
    if data_root:
        cfg["data_root"] = data_root
    return cfg


def idle_threads() -> int:
    """The cores that other work leaves idle (utils.machine.busy_cores), at least 1, at most torch's
    default. On a busy CPU, threads that wait for each other's time slices are far slower than one:
    on this project's 2-core machine with about 4 other processes running, the evaluation of 240
    smoke images took 116 s with one thread and 657 s with two (YuNet alone 22x slower)."""
    busy = busy_cores()
    return max(1, min(torch.get_num_threads(), int((os.cpu_count() or 1) - busy + 0.5)))


def evaluation_threads(opts: Options) -> int:
    if opts.threads is not None:
        if opts.threads < 1:
            raise InferenceError(f"threads must be at least 1, got {opts.threads}")
        return opts.threads
    return torch.get_num_threads() if os.environ.get("OMP_NUM_THREADS") else idle_threads()


def view_passwords(indices, length: int, seed: int):
    """p, p2, w1, w2 (B, L) for split indices: each row depends only on (seed, index)."""
    rows = [draw_step_passwords(1, length, image_generator(seed, int(i))) for i in indices]
    return tuple(torch.cat([getattr(r, k) for r in rows]) for k in ("p", "p2", "w1", "w2"))


def detector_upsample(side: int) -> int:
    """dlib HOG finds faces of about 80 px; faces fill about half of these images, so the image is
    doubled until its side is at least 160 px."""
    u = 0
    while side * 2 ** u < 160:
        u += 1
    return u


def yunet_detector(side: int, threads: int | None = None):
    """anonymize.py's detector (YuNet at its default threshold), keeping faces of any size, with its
    pyramid topped at 2x instead of 4x: on the smoke data's 64 px test faces (about 27 px) the 4x
    level found nothing more (the same rates on 120 originals and their five baselines) and took 70%
    of the time. ``threads``: of YuNet's own OpenMP runtime, which reads OMP_NUM_THREADS once, when
    it loads (so only if it is not loaded yet and OMP_NUM_THREADS is unset)."""
    from protect.face_detect_yunet import YuNetDetector

    if threads is None or os.environ.get("OMP_NUM_THREADS"):
        return YuNetDetector(min_face=0, enlarge_to=2 * side)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        return YuNetDetector(min_face=0, enlarge_to=2 * side)
    finally:
        del os.environ["OMP_NUM_THREADS"]


def face_detected(detector: DlibDetector, image: np.ndarray, landmarks: torch.Tensor) -> bool:
    """A face is found whose box centre lies inside the original face's box (a detection elsewhere
    in the image does not count)."""
    return face_found(detector, image, face_box(landmarks, image.shape[:2]))


def face_found(detector, image: np.ndarray, box) -> bool:
    """``face_detected`` with the original face's box given (left, top, right, bottom)."""
    l, t, r, b = box
    for f in detector.detect(image):
        cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
        if l <= cx <= r and t <= cy <= b:
            return True
    return False


def cache_path(cfg: Config, dataset: str) -> str:
    """Where the measurements of a data set's originals and baselines are kept (beside the small
    recogniser for synthetic data)."""
    if dataset == "synthetic":
        return os.path.join(cfg.data_root, f"{cfg.synthetic_dir}_evaluation_cache_{cfg.img_size}px.pt")
    return os.path.join(cfg.data_root, f"evaluation_cache_{dataset}_{cfg.img_size}px.pt")


def small_recogniser(opts: Options, cfg: Config, dataset: str, device, log) -> SmallRecogniser | None:
    """The small recogniser: loaded from --recogniser, or (synthetic data) trained on the training
    identities and saved beside the data on first use."""
    meta = {"dataset": dataset, "img_size": int(cfg.img_size)}
    if dataset == "synthetic":
        meta.update(synthetic_identities=int(cfg.synthetic_identities),
                    synthetic_images_per_id=int(cfg.synthetic_images_per_id), synthetic_seed=int(cfg.synthetic_seed))
    path = opts.recogniser
    if path is None:
        if dataset != "synthetic":
            return None
        path = os.path.join(cfg.data_root,
                            f"{cfg.synthetic_dir}_recogniser_{cfg.img_size}px_e{opts.recogniser_epochs}.pth")
    if os.path.isfile(path):
        return SmallRecogniser.load(path, device, expect=meta)
    if opts.recogniser is not None and dataset != "synthetic":
        raise CheckpointError(f"recogniser file not found: {path}")
    why = unwritable(os.path.dirname(os.path.abspath(path)))
    if why:  # before the training, not after it
        raise InferenceError(f"cannot keep the small recogniser at {path}: {why}")
    train_set = datasets.build_dataset(cfg, "train", dataset)
    log(f"training the small recogniser on {len(train_set)} images of the training identities "
        f"({opts.recogniser_epochs} epochs); saved to {path}")
    rec = train_small_recogniser(train_set, meta, epochs=opts.recogniser_epochs, seed=opts.seed, device=device)
    rec.save(path)
    rec.meta["path"] = os.path.abspath(path)
    return rec


# ---- measuring ----------------------------------------------------------------------------------

def make_views(run: Runner, I: torch.Tensor, lm: torch.Tensor, passwords, t: StageTimer) -> OrderedDict:
    """The views of one batch, in the order of the report's tables (see the module's docstring);
    each JPEG round trip of M is made once."""
    p, p2, w1, w2 = passwords
    jpeg = {}

    def jpeg_of(q: int) -> torch.Tensor:
        if q not in jpeg:
            with t("jpeg"):
                jpeg[q] = quality.jpeg_round_trip(M, q)
        return jpeg[q]

    with t("generator"):
        M = run(I, p)
        views = OrderedDict([(ORIGINAL, I), ("anonymized", M), ("second anonymization", run(I, p2)),
                             ("recovered", run(M, complement(p)))])
    for q in JPEG_QUALITIES:
        Mq = jpeg_of(q)
        with t("generator"):
            views[f"recovered (M as JPEG q{q})"] = run(Mq, complement(p))
    with t("generator"):
        views["wrong recovery 1"] = run(M, w1)
        views["wrong recovery 2"] = run(M, w2)
    M_jpeg = jpeg_of(SAVED_JPEG)
    views[f"anonymized (JPEG q{SAVED_JPEG})"] = M_jpeg
    with t("generator"):
        views[f"wrong recovery 1 (M as JPEG q{SAVED_JPEG})"] = run(M_jpeg, w1)
        views[f"wrong recovery 2 (M as JPEG q{SAVED_JPEG})"] = run(M_jpeg, w2)
    with t("baselines"):
        for base in BASELINES:
            views[base.name] = base(I, lm)
    return views


DATA_VIEWS = (ORIGINAL,) + tuple(bl.name for bl in BASELINES)  # the views that do not depend on the model


def _by_view(values: np.ndarray, names) -> dict:
    """(images, views, ...) -> {view: (images, ...)}."""
    return {v: values[:, k] for k, v in enumerate(names)}


@torch.no_grad()
def measure_batch(run: Runner, b: dict, L: int, seed: int, recognisers: dict, detectors: dict, m: Measured,
                  examples: int, inception=None, timer: StageTimer | None = None,
                  cache: MeasureCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All views of one batch and their per-image measurements; returns M and p (for the attack).
    Each view is measured once (the JPEG round trips too); dlib's descriptor runs in PyTorch on
    batches of the chips of every view; SSIM and MS-SSIM share their first scale. What depends on
    the data alone (the original and the baselines: DATA_VIEWS) comes from ``cache`` when it holds
    it (metrics/cache.py), and is kept there otherwise."""
    t = timer or StageTimer()
    cache = cache if cache is not None else MeasureCache(None)
    I = b["image"].to(run.device)
    lm = b["landmarks"]
    if not torch.isfinite(lm).all():
        bad = [p for p, ok in zip(b["path"], torch.isfinite(lm).flatten(1).all(1)) if not ok]
        raise InferenceError(f"the evaluation needs five landmarks for every image; none for {bad[:3]}")
    n = len(I)
    passwords = view_passwords(b["index"].tolist(), L, seed)
    views = make_views(run, I, lm, passwords, t)
    names = list(views)
    model_views = [v for v in names if v not in DATA_VIEWS]
    size = tuple(I.shape[-2:])
    boxes = [face_box(lm[i], size) for i in range(n)]
    keys = image_keys(I, lm)
    context = cache_context(run.device)
    baselines = [bl.name for bl in BASELINES]

    with t("quality"):
        # view by view: one tensor of every view was slower (its float64 intermediates leave the cache)
        def quality_of(v, idx=slice(None)):
            s, ms = quality.ssim_and_ms_ssim(views[v][idx], I[idx])
            return torch.stack([quality.psnr(views[v][idx], I[idx]), s, ms], 1).numpy()

        figs = {v: quality_of(v) for v in model_views}
        figs.update(_by_view(cache.lookup(f"quality {context}", keys, lambda idx: np.stack(
            [quality_of(v, idx) for v in baselines], 1)), baselines))
        for v in names[1:]:
            q = m.quality.setdefault(v, {"psnr": [], "ssim": [], "ms_ssim": []})
            for c, metric in enumerate(("psnr", "ssim", "ms_ssim")):
                q[metric] += figs[v][:, c].tolist()
    with t("uint8"):
        all_u8 = to_uint8(torch.cat([views[v] for v in names]))
        u8 = {v: all_u8[k * n:(k + 1) * n] for k, v in enumerate(names)}
    for rname, rec in recognisers.items():
        store = m.embeddings.setdefault(rname, {})
        if isinstance(rec, DlibRecogniser):
            def dlib_of(vs, idx, rec=rec):
                with t("dlib chips"):
                    chips = [c for v in vs for c in rec.chips_of(u8[v][idx], [boxes[i] for i in idx])]
                with t("dlib descriptor"):
                    return rec.describe(chips).reshape(len(vs), len(idx), -1).transpose(1, 0, 2)

            E = _by_view(dlib_of(model_views, list(range(n))), model_views)
            E.update(_by_view(cache.lookup(f"dlib {rec.backend} {context}", keys,
                                           lambda idx: dlib_of(DATA_VIEWS, idx)), DATA_VIEWS))
        elif isinstance(rec, SmallRecogniser):
            with t(f"recogniser {rname}"):  # view by view: batches of every view were no faster
                E = {v: rec.embed(views[v], lm) for v in model_views}
                E.update(_by_view(cache.lookup(f"small {rec.digest} {context}", keys, lambda idx, rec=rec: np.stack(
                    [rec.embed(views[v][idx], lm[idx]) for v in DATA_VIEWS], 1)), DATA_VIEWS))
        else:  # the checkpoint's own SphereFace: nothing to keep
            with t(f"recogniser {rname}"):
                E = {v: rec.embed(views[v], lm) for v in names}
        for v in names:
            store.setdefault(v, []).append(E[v])
    if inception is not None:
        with t("fid features"):
            for name in DETECTION_VIEWS + tuple(baselines):
                m.fid.setdefault(name, []).append(inception(views[name]))
    detected = DETECTION_VIEWS + tuple(baselines)
    for dname, stage, store in (("dlib", "detection dlib", m.detected), ("yunet", "detection yunet", m.yunet)):
        if dname not in detectors:
            continue
        det = detectors[dname]
        with t(stage):
            def found(vs, idx, det=det):
                return np.array([[face_found(det, u8[v][i], boxes[i]) for v in vs] for i in idx], bool)

            hits = _by_view(found([v for v in detected if v not in DATA_VIEWS], range(n)),
                            [v for v in detected if v not in DATA_VIEWS])
            hits.update(_by_view(cache.lookup(f"{dname} {describe_detector(det)} {context}", keys,
                                              lambda idx, found=found: found(DATA_VIEWS, idx)), DATA_VIEWS))
            for v in detected:
                store.setdefault(v, []).extend(hits[v].tolist())
    with t("sharpness"):
        def sharpness_of(vs, idx):
            return np.stack([quality.laplacian_variance(u8[v][idx], [boxes[i] for i in idx]) for v in vs], 1)

        sharp = _by_view(sharpness_of(model_views, list(range(n))), model_views)
        sharp.update(_by_view(cache.lookup(f"sharpness {context}", keys, lambda idx: sharpness_of(DATA_VIEWS, idx)),
                              DATA_VIEWS))
        for v in names[1:]:
            with np.errstate(divide="ignore", invalid="ignore"):  # a flat original face has no ratio (NaN)
                ratio = np.where(sharp[ORIGINAL] > 0, sharp[v] / sharp[ORIGINAL], np.nan)
            m.sharpness.setdefault(v, []).extend(ratio.tolist())
    for i in range(n):
        if len(m.examples) < examples:
            m.examples.append([u8[name][i] for name in EXAMPLE_VIEWS + tuple(baselines)])
            m.example_titles.append(b["path"][i])
    m.labels += b["label"].tolist()
    m.indices += b["index"].tolist()
    m.paths += list(b["path"])
    return views["anonymized"], passwords[0]


def cache_context(device) -> str:
    """What every kept measurement depends on besides its face and its own part: the libraries, the
    device kind, the baselines and the face box."""
    import dlib

    base = ";".join(f"{bl.name}:{bl.kind}:{bl.fraction}" for bl in BASELINES)
    return f"torch {torch.__version__} dlib {dlib.__version__} {torch.device(device).type} [{base}] x{REGION_SCALE}"


def describe_detector(det) -> str:
    if isinstance(det, DlibDetector):
        return f"{det.name} upsample {det.upsample} min_face {det.min_face}"
    from importlib.metadata import version

    return (f"{det.name} {version('yuface')} threshold {det.threshold} scales {det.scales(64, 64)} "
            f"{det.scales(128, 128)} nms {det.nms_iou} min_face {det.min_face}")


# ---- summarising --------------------------------------------------------------------------------

def figure(section, metric, view, recogniser, value, n, definition) -> dict:
    return {"section": section, "metric": metric, "view": view, "recogniser": recogniser,
            "value": None if value is None or not np.isfinite(value) else round(float(value), 6), "n": int(n),
            "definition": definition}


def summarise_recogniser(name: str, rec, base: str, thr: float, source: str, emb: dict, labels: np.ndarray,
                         figures: list, curves: dict) -> dict:
    E0 = emb[ORIGINAL]
    D00 = pairwise(E0, E0, rec.metric)
    same, diff = original_pairs(D00, labels)
    ver = verification(same, diff, thr)
    n = len(labels)
    loo = D00 + np.diag(np.full(n, np.inf))
    nearest_other = labels[np.argmin(loo, 1)] if n > 1 else labels
    has_other = np.array([(labels == labels[i]).sum() > 1 for i in range(n)])
    info = {"description": rec.description, "distance": rec.metric, "threshold": round(thr, 6),
            "threshold_source": source}
    where = f"recogniser {name} (threshold {thr:.4g}, {source})"
    figures += [
        figure("recogniser", "true_match_rate", ORIGINAL, name, ver.true_match, ver.same_pairs,
               f"share of pairs of test originals of the same identity at distance < threshold; {where}"),
        figure("recogniser", "true_non_match_rate", ORIGINAL, name, ver.true_non_match, ver.different_pairs,
               f"share of pairs of test originals of different identities at distance >= threshold; {where}"),
        figure("recogniser", "balanced_accuracy", ORIGINAL, name, ver.balanced_accuracy,
               ver.same_pairs + ver.different_pairs,
               "mean of the true match and true non-match rates on pairs of test originals"),
        figure("recogniser", "auc", ORIGINAL, name, ver.auc, ver.same_pairs + ver.different_pairs,
               "probability that a same-identity pair of originals is closer than a different-identity pair"),
        figure("recogniser", "rank1_leave_one_out", ORIGINAL, name,
               (nearest_other == labels)[has_other].mean() if has_other.any() else float("nan"), int(has_other.sum()),
               "share of originals whose nearest other test original (itself excluded) has the same identity"),
    ]
    for view, E in emb.items():
        if view == ORIGINAL:
            continue
        d = rec.distance(E0, E)
        match = d < thr
        gallery = pairwise(E, E0, rec.metric)
        rank1 = (labels[np.argmin(gallery, 1)] == labels).mean()
        figures += [
            figure("identity", "match_rate", view, name, match.mean(), n,
                   f"share of {view} images at distance < threshold from their original; {where}"),
            figure("identity", "deid_rate", view, name, 1 - match.mean(), n,
                   f"share of {view} images NOT matched to their original (distance >= threshold); {where}"),
            figure("identity", "mean_distance", view, name, d.mean(), n,
                   f"mean distance between each {view} image and its original ({rec.metric})"),
            figure("identity", "rank1_reid", view, name, rank1, n,
                   f"share of {view} images whose nearest image in a gallery of all {n} test originals (its own "
                   "original included) has the original's identity"),
        ]
        if base not in curves:
            curves[base] = {"threshold": [], "distances": {}, "same": same, "different": diff}
        curves[base]["distances"][view] = d
        curves[base]["threshold"] = sorted(set(curves[base]["threshold"]) | {thr})
    for a, b in DIVERSITY_PAIRS:
        d = rec.distance(emb[a], emb[b])
        figures += [
            figure("diversity", "different_rate", f"{a} vs {b}", name, (d >= thr).mean(), n,
                   f"share of pairs ({a}, {b}) of one face at distance >= threshold: the recogniser sees two people; "
                   f"{where}"),
            figure("diversity", "mean_distance", f"{a} vs {b}", name, d.mean(), n,
                   f"mean distance between {a} and {b} of the same face ({rec.metric})"),
        ]
    info["verification_originals"] = {"true_match_rate": ver.true_match, "true_non_match_rate": ver.true_non_match,
                                      "balanced_accuracy": ver.balanced_accuracy, "auc": ver.auc,
                                      "same_pairs": ver.same_pairs, "different_pairs": ver.different_pairs}
    return info


def summarise(m: Measured, recognisers: dict, opts: Options) -> tuple[list, dict, dict]:
    figures, infos, curves = [], {}, {}
    labels = np.asarray(m.labels)
    n = len(labels)
    for view, q in m.quality.items():
        for metric, what in (("psnr", "PSNR in dB (capped at 100 for identical images)"), ("ssim", "SSIM"),
                             ("ms_ssim", "MS-SSIM")):
            figures.append(figure("quality", metric, view, None, float(np.mean(q[metric])), len(q[metric]),
                                  f"mean {what} of the {view} image against the original"))
    for view, hits in m.detected.items():
        figures.append(figure("detection", "detection_rate", view, None, float(np.mean(hits)), len(hits),
                              f"share of {view} images in which dlib's HOG detector finds a face centred in the "
                              "original face's box"))
    for view, hits in m.yunet.items():
        figures.append(figure("detection", "yunet_rate", view, None, float(np.mean(hits)), len(hits),
                              f"share of {view} images in which YuNet (anonymize.py's detector) finds a face "
                              "centred in the original face's box"))
    base_rate = np.mean(m.yunet[ORIGINAL]) if ORIGINAL in m.yunet else float("nan")
    for view, hits in m.yunet.items():
        if view != ORIGINAL:
            figures.append(figure("detection", "yunet_rate_vs_original", view, None,
                                  np.mean(hits) / base_rate if base_rate > 0 else float("nan"), len(hits),
                                  f"YuNet's detection rate on {view} images divided by its rate on the originals "
                                  "(1: found as often as in the originals)"))
    for view, ratios in m.sharpness.items():
        r = np.asarray(ratios, np.float64)
        r = r[np.isfinite(r)]  # images whose original face is flat have no ratio
        figures.append(figure("sharpness", "laplacian_variance_ratio", view, None,
                              float(r.mean()) if len(r) else float("nan"), len(r),
                              f"mean over images of the variance of the Laplacian of the {view} image's luma in the "
                              "face box, divided by the original's (1: as sharp; a blur lowers it, noise raises it)"))
    if m.fid:
        from .fid import frechet_distance

        ref = np.concatenate(m.fid[ORIGINAL])
        for view, feats in m.fid.items():
            if view != ORIGINAL:
                figures.append(figure("realism", "fid", view, None, frechet_distance(ref, np.concatenate(feats)), n,
                                      f"Frechet Inception distance between the {n} originals and the {n} {view} "
                                      "images (weights from --fid-weights; see metrics/fid.py)"))
    for base, rec in recognisers.items():
        emb = {v: np.concatenate(e) for v, e in m.embeddings[base].items()}
        variants = []
        if base == "dlib":
            same, diff = original_pairs(pairwise(emb[ORIGINAL], emb[ORIGINAL], rec.metric), labels)
            variants.append(("dlib", DLIB_THRESHOLD, "dlib's published threshold"))
            if len(same) and len(diff):
                variants.append(("dlib (calibrated)", calibrate(same, diff),
                                 "best balanced accuracy on pairs of test originals"))
        else:
            same, diff = original_pairs(pairwise(emb[ORIGINAL], emb[ORIGINAL], rec.metric), labels)
            if not (len(same) and len(diff)):
                continue
            variants.append((base, calibrate(same, diff), "best balanced accuracy on pairs of test originals"))
        for name, thr, source in variants:
            infos[name] = summarise_recogniser(name, rec, base, thr, source, emb, labels, figures, curves)
    return figures, infos, curves


# ---- the run ------------------------------------------------------------------------------------

def run(opts: Options, log=print) -> str:
    """Evaluate; returns the output folder (``opts.out``, or ``opts.out_2``... if it exists). Logs the
    wall time of every stage at the end (also in metrics.json, protocol.stage_seconds). Runs on
    ``evaluation_threads(opts)`` CPU threads, then gives torch its thread count back."""
    threads_before = torch.get_num_threads()
    threads = evaluation_threads(opts)
    torch.set_num_threads(threads)
    try:
        return _run(opts, log, threads)
    finally:
        torch.set_num_threads(threads_before)


def _run(opts: Options, log, threads: int) -> str:
    from .report import write_report

    for key, low in (("batch_size", 1), ("attack_candidates", 1), ("recogniser_epochs", 1), ("max_images", 1),
                     ("attack_images", 0), ("examples", 0), ("seed", 0)):
        if getattr(opts, key) is not None:
            check_number(getattr(opts, key), f"--{key.replace('_', '-')}", low=low, integer=True, error=InferenceError)
    if opts.dataset not in datasets.DATASETS:
        raise InferenceError(f"unknown dataset {opts.dataset!r}; choose one of {', '.join(datasets.DATASETS)}")
    why = unwritable(os.path.dirname(os.path.abspath(opts.out)))
    if why:
        raise InferenceError(f"--out {opts.out}: cannot write the evaluation there: {why}")
    timer = StageTimer()
    t_start = time.perf_counter()

    try:
        device = pick_device(opts.device)
    except RuntimeError as e:
        raise InferenceError(str(e)) from None
    torch.manual_seed(opts.seed)
    ckpt = load_checkpoint(opts.checkpoint)
    try:
        cfg = evaluation_config(ckpt, opts.dataset, opts.config, opts.data_root)
    except ConfigError as e:
        if opts.config:  # the message names the file
            raise
        raise ConfigError(f"{opts.checkpoint}: {e}") from None  # the checkpoint's own config
    model = load_generator(cfg, opts.checkpoint, device)
    runner = Runner(model, amp=False)
    ds = load_test_split(cfg, opts.dataset)
    indices = choose_images(len(ds), opts.max_images, opts.seed)
    if ds.labels is None:
        raise InferenceError(f"{ds}: the evaluation needs identity labels (verification and re-identification)")

    recognisers, skipped = OrderedDict(), []
    if opts.no_dlib:
        skipped.append({"what": "dlib recogniser", "why": "--no-dlib"})
    else:
        recognisers["dlib"] = DlibRecogniser(backend="dlib") if opts.reference else DlibRecogniser(device=device)
    try:
        recognisers["sphereface"] = SphereFaceRecogniser.from_checkpoint(ckpt, cfg, device)
    except (CheckpointError, KeyError) as e:
        skipped.append({"what": "SphereFace (white-box) recogniser", "why": str(e)})
    small = small_recogniser(opts, cfg, opts.dataset, device, log)
    if small is not None:
        recognisers["small"] = small
    else:
        skipped.append({"what": "small recogniser", "why": "trained only for synthetic data; give --recogniser FILE"})
    iteration = ckpt.get("global_iter") if isinstance(ckpt.get("global_iter"), int) else None
    del ckpt
    inception = None
    if opts.fid_weights:
        from .fid import InceptionFeatures
        inception = InceptionFeatures(opts.fid_weights, device)
    else:
        skipped.append({"what": "FID", "why": "no Inception weights given (--fid-weights FILE); nothing is downloaded"})
    detectors = {"dlib": DlibDetector(model="hog", upsample=detector_upsample(cfg.img_size), min_face=0)}
    if not opts.reference:
        try:
            detectors["yunet"] = yunet_detector(cfg.img_size, threads)
        except ImportError as e:  # yuface missing (no wheel for this Python)
            skipped.append({"what": "YuNet detection rates", "why": str(e)})
    measure = measure_batch_reference if opts.reference else measure_batch
    cache = None
    if opts.cache and not opts.reference:
        cache = MeasureCache(opts.cache if isinstance(opts.cache, str) else cache_path(cfg, opts.dataset))
    timer.add("setup", time.perf_counter() - t_start)

    L = model.passwd_length
    m = Measured()
    attack_n = min(opts.attack_images, len(indices))
    attack_M, attack_p = [], []
    t0 = time.time()
    with tqdm(total=len(indices) + attack_n, unit="img", desc="evaluate", disable=not opts.progress) as bar:
        loader = batches(ds, indices, opts.batch_size, 0, device)
        while True:
            with timer("data"):
                b = next(loader, None)
            if b is None:
                break
            if opts.reference:
                M, p = measure(runner, b, L, opts.seed, recognisers, detectors, m, opts.examples, inception, timer)
            else:
                M, p = measure(runner, b, L, opts.seed, recognisers, detectors, m, opts.examples, inception, timer,
                               cache)
            need = attack_n - sum(len(x) for x in attack_M)
            if need > 0:
                attack_M.append(M[:need])
                attack_p.append(p[:need])
            bar.update(len(b["index"]))
        with timer("attack"):
            attack = password_attack(runner, torch.cat(attack_M), torch.cat(attack_p), opts.attack_candidates,
                                     seed=opts.seed, progress=bar.update) if attack_n else None
    measure_seconds = time.time() - t0
    if cache is not None:
        with timer("cache"):
            cache.save()

    with timer("summary and report"):
        figures, infos, curves = summarise(m, recognisers, opts)
    protocol = {
        "checkpoint": os.path.abspath(opts.checkpoint), "iteration": iteration, "generator_sha256": model.fingerprint,
        "original_format": model.original_format, "dataset": ds.name, "split": "test", "data": ds.image_dir,
        "images": len(m.labels), "identities": int(len(set(m.labels))), "img_size": int(cfg.img_size),
        "passwd_length": L, "use_minus_one": model.mode, "seed": opts.seed, "device": str(device),
        "precision": "float32", "batch_size": opts.batch_size, "max_images": opts.max_images,
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "seconds": round(measure_seconds, 1),
        "baselines": {bl.name: bl.describe(cfg.img_size) for bl in BASELINES},
        "jpeg_qualities": list(JPEG_QUALITIES), "detector": f"dlib HOG, upsample {detector_upsample(cfg.img_size)}",
        "yunet": "YuNet (protect/face_detect_yunet.py) at anonymize.py's threshold, min_face 0, pyramid "
                 f"{detectors['yunet'].scales(cfg.img_size, cfg.img_size)}" if "yunet" in detectors else None,
        "sharpness_region": "the face box (see metrics/baselines.face_box), 1 px inside the image",
        "measuring_path": "reference (metrics/reference.py)" if opts.reference else "fast",
        "cache": None if cache is None else {"path": cache.path and os.path.abspath(cache.path), "reused": cache.hits,
                                             "measured": cache.misses},
    }
    with timer("summary and report"):
        out = new_folder(opts.out)
        protocol["stage_seconds"] = timer.rounded()  # up to the report (writing it is not counted here)
        write_report(out, protocol, figures, infos, curves, attack, skipped, m, opts)
    images = len(m.labels)
    log(f"time per stage ({images} images, {torch.get_num_threads()} threads):\n{timer.table(images)}")
    if cache is not None and cache.path:
        log(f"measurements of the originals and baselines (the same for every model): {cache.hits} reused, "
            f"{cache.misses} measured (kept in {cache.path})")
    return out
