"""evaluate.py end to end on synthetic faces with a tiny 8-bit checkpoint, and the password attack.

The checkpoint holds freshly initialised narrow networks saved the way the trainer saves them (no
training: these tests check the measurement, not the model)."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
import evaluate
from metrics import attack as atk
from metrics.baselines import BASELINES
from metrics.evaluation import Options, run, view_passwords
from metrics.views import G_VIEWS, ORIGINAL
from models import Networks
from models.passwords import complement
from results.inference_pages import Runner
from tests.browser import Chromium, require_chromium, serve_directory
from tests.views_helpers import ROOT, local_file, parse_page, tiny_config
from training.checkpoint import FORMAT, InferenceModel, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

N_IMAGES = 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("evaluate")
    cfg = tiny_config(str(base / "data"), str(base / "ck"), passwd_length=8)
    train = datasets.build_dataset(cfg, "train")  # generates the tiny synthetic faces
    torch.manual_seed(0)
    nets = Networks(cfg, train.num_classes)
    path = str(base / "tiny.pth.tar")
    save_checkpoint({"format": FORMAT, "epoch": 0, "iter": 0, "global_iter": 0, "config": dict(cfg),
                     "mean_landmarks": train.mean_landmarks(), "state_dict_G": nets.G.state_dict(),
                     "state_dict_FR": nets.FR.state_dict()}, path)
    return SimpleNamespace(base=base, cfg=cfg, ckpt=path)


def options(tiny, out, **kw) -> Options:
    o = dict(checkpoint=tiny.ckpt, dataset="synthetic", out=str(out), max_images=N_IMAGES, batch_size=3,
             device="cpu", recogniser_epochs=1, no_dlib=True, attack_images=1, attack_candidates=16, examples=2,
             progress=False)
    o.update(kw)
    return Options(**o)


@pytest.fixture(scope="module")
def evaluated(tiny):
    out = run(options(tiny, tiny.base / "eval"), log=lambda *_: None)
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
        return SimpleNamespace(out=out, data=json.load(f))


def figures_by_key(data):
    return {(f["section"], f["metric"], f["view"], f["recogniser"]): f for f in data["figures"]}


def check_every_figure(data, recognisers, faces=True):
    figs = figures_by_key(data)
    views = list(G_VIEWS) + [b.name for b in BASELINES]
    expected = []
    for v in views:
        expected += [("quality", m, v, None) for m in ("psnr", "ssim", "ms_ssim")]
        for r in recognisers:
            expected += [("identity", m, v, r) for m in ("match_rate", "deid_rate", "mean_distance", "rank1_reid")]
    detected = (ORIGINAL, "anonymized", "recovered", "wrong recovery 1") + tuple(b.name for b in BASELINES)
    for v in detected:
        expected.append(("detection", "detection_rate", v, None))
    if faces:  # the fast path's figures: YuNet's detection rates and the sharpness ratio
        expected += [("detection", "yunet_rate", v, None) for v in detected]
        expected += [("detection", "yunet_rate_vs_original", v, None) for v in detected[1:]]
        expected += [("sharpness", "laplacian_variance_ratio", v, None) for v in views]
    for r in recognisers:
        expected += [("recogniser", m, ORIGINAL, r) for m in
                     ("true_match_rate", "true_non_match_rate", "balanced_accuracy", "auc", "rank1_leave_one_out")]
        for pair in ("anonymized vs second anonymization", "wrong recovery 1 vs wrong recovery 2",
                     "wrong recovery 1 (M as JPEG q95) vs wrong recovery 2 (M as JPEG q95)"):
            expected += [("diversity", m, pair, r) for m in ("different_rate", "mean_distance")]
    missing = [k for k in expected if k not in figs]
    assert not missing, missing
    for k in expected:
        f = figs[k]
        assert f["definition"] and f["n"] > 0, k
        assert f["value"] is not None and math.isfinite(f["value"]), k
        if k[1] not in ("psnr", "mean_distance", "yunet_rate_vs_original", "laplacian_variance_ratio"):
            assert 0 <= f["value"] <= 1 + 1e-9, k
    for k in expected:
        if k[0] in ("quality", "identity", "detection", "sharpness"):
            assert figs[k]["n"] == N_IMAGES, k  # the partial last batch (4 = 3 + 1) counts
    assert set(data["recognisers"]) == set(recognisers)
    for r in recognisers:
        assert data["recognisers"][r]["threshold"] is not None and data["recognisers"][r]["description"]


def test_json_has_every_figure_with_definition_and_sample_size(evaluated):
    d = evaluated.data
    check_every_figure(d, ["sphereface", "small"])
    p = d["protocol"]
    assert p["images"] == N_IMAGES and p["passwd_length"] == 8 and p["dataset"] == "synthetic"
    assert set(p["baselines"]) == {b.name for b in BASELINES}
    a = d["attack"]
    assert a["passwd_length"] == 8 and not a["exhaustive"] and a["candidates_per_image"] == 16
    assert a["images"] == 1 and 1 <= a["ranks"][0] <= 16 and a["chance_top1"] == 1 / 16
    assert 0 <= a["top1"] <= a["top5"] <= 1 and a["seconds_per_guess"] > 0 and a["chance_mean_rank"] == 8.5
    assert set(a["time_to_exhaust"]) == {"2^16", "2^32", "2^64"}
    assert a["time_to_exhaust"]["2^32"]["seconds"] == pytest.approx(a["seconds_per_guess"] * 2 ** 32)
    assert "64" in d["password_advice"]
    assert {s["what"] for s in d["skipped"]} >= {"FID", "dlib recogniser"}
    report = open(os.path.join(evaluated.out, "report.md"), encoding="utf-8").read()
    for title in ("Recognisers on test originals", "Privacy, recovery and realism", "Diversity", "Password guessing",
                  "Faces, not blurs"):
        assert title in report
    assert "time per stage" not in report
    assert set(p["stage_seconds"]) >= {"generator", "quality", "detection dlib", "detection yunet", "sharpness"}
    assert "solid mask" in report and "sigma = side/32 (2 px)" in report


def test_page_links_only_existing_images(evaluated):
    page = os.path.join(evaluated.out, "index.html")
    p = parse_page(page)
    assert len(p.imgs) == 4 + 2 * (6 + len(BASELINES))  # 2 histograms + 2 curves, 2 example strips
    assert all(os.path.isfile(local_file(page, s)) for s in p.imgs)


def test_examples_sheet_shows_the_strips_of_the_page(evaluated):
    sheet = np.asarray(Image.open(os.path.join(evaluated.out, "examples.png")).convert("RGB"))
    strip = np.asarray(Image.open(os.path.join(evaluated.out, "examples", "r001_c03.png")).convert("RGB"))
    h, w = strip.shape[:2]
    assert sheet.shape == (14 + 2 * 2 * h, 5 * 2 * w, 3)  # title row, then 2 strips of 5 views at 2x
    # the second strip's recovered face, scaled up by pixel repetition
    np.testing.assert_array_equal(sheet[14 + 2 * h::2, 3 * 2 * w:4 * 2 * w:2], strip)


def test_same_numbers_again_whatever_the_batch_and_nothing_overwritten(tiny, evaluated):
    out = run(options(tiny, tiny.base / "eval", batch_size=4, attack_images=0), log=lambda *_: None)
    assert out == evaluated.out + "_2"
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
        again = figures_by_key(json.load(f))
    first = figures_by_key(evaluated.data)
    assert again.keys() == first.keys()
    for k, f in first.items():
        assert again[k]["value"] == pytest.approx(f["value"], rel=1e-4, abs=1e-5), k


@pytest.mark.browser
def test_page_loads_in_chromium_without_broken_images(evaluated):
    require_chromium()
    with serve_directory(evaluated.out) as base, Chromium() as browser:
        assert browser.open(base + "index.html") == 200
        imgs = browser.images()
        assert len(imgs) == 4 + 2 * (6 + len(BASELINES))
        broken = [i["src"] for i in imgs if i["naturalWidth"] <= 0 or i["naturalHeight"] <= 0]
        assert not broken


# ---- the password attack --------------------------------------------------------------------------

def test_candidates_hold_the_true_password():
    g = torch.Generator().manual_seed(0)
    true = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0], dtype=torch.uint8)
    every = atk.candidate_codes(true, 256, g)
    assert every.shape == (256, 8) and len({tuple(c.tolist()) for c in every}) == 256
    some = atk.candidate_codes(true, 16, g)
    assert some.shape == (16, 8) and len({tuple(c.tolist()) for c in some}) == 16
    assert (some == true).all(1).sum() == 1


def test_rank_counts_ties_against_the_attacker():
    s = torch.tensor([0.5, 0.1, 0.1, 0.9])
    assert atk.rank_of(s, 1) == 2 and atk.rank_of(s, 0) == 3 and atk.rank_of(s, 3) == 4
    r = atk.AttackResult(8, 256, True, ranks=[1, 3, 7, 200])
    assert (r.top(1), r.top(5)) == (0.25, 0.5)
    assert atk.human_duration(30) == "30 s" and atk.human_duration(7200) == "2 hours"
    assert atk.human_duration(3 * 365.25 * 86400) == "3 years"


def attack_tiny(tiny, candidates):
    model = InferenceModel(tiny.ckpt)
    runner = Runner(model, amp=False)
    test = datasets.build_dataset(tiny.cfg, "test")
    x = test[0]["image"][None]
    p = view_passwords([0], 8, 0)[0]
    M = runner(x, p)
    return runner, M, p, atk.password_attack(runner, M, p, max_candidates=candidates, seed=0)


def test_attack_on_a_tiny_8_bit_model(tiny):
    runner, M, p, res = attack_tiny(tiny, 24)
    assert not res.exhaustive and res.candidates == 24 and res.guesses == 24
    assert 1 <= res.ranks[0] <= 24 and res.time_per_guess > 0 and res.top(5) in (0.0, 1.0)
    # the score is the consistency test: the true code's score is what the definition says
    s = atk.scores(runner, M, p, chunk=1)
    assert s[0].item() == pytest.approx((runner(runner(M, complement(p)), p) - M).abs().mean().item(), abs=1e-6)


@pytest.mark.slow
def test_exhaustive_attack_on_a_tiny_8_bit_model(tiny):
    _, _, _, res = attack_tiny(tiny, 256)
    assert res.exhaustive and res.candidates == 256 and res.guesses == 256
    assert 1 <= res.ranks[0] <= 256 and res.time_per_guess > 0


@pytest.mark.slow
def test_cli_with_dlib(tiny, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"), "--checkpoint", tiny.ckpt, "--dataset",
                           "synthetic", "--out", str(tmp_path / "e"), "--max-images", str(N_IMAGES),
                           "--recogniser-epochs", "1", "--attack-images", "1", "--device", "cpu"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "e" / "metrics.json", encoding="utf-8") as f:
        data = json.load(f)
    check_every_figure(data, ["dlib", "dlib (calibrated)", "sphereface", "small"])
    assert data["recognisers"]["dlib"]["threshold"] == 0.6
    bar = [line for line in proc.stderr.splitlines() if line.strip()]
    assert bar and all(line.startswith("evaluate:") for line in bar)  # one progress bar, nothing else
    assert bar[-1].startswith("evaluate: 100%") and f"{N_IMAGES + 1}/{N_IMAGES + 1}" in bar[-1]


def test_bad_input_is_a_one_line_error(tiny, tmp_path, capsys):
    base = ["--dataset", "synthetic", "--out", str(tmp_path / "o")]
    assert evaluate.main(["--checkpoint", str(tmp_path / "missing.pth")] + base) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.pth" in err and err.count("\n") == 1
    assert evaluate.main(["--checkpoint", tiny.ckpt, "--max-images", "0"] + base) == 2
    assert "--max-images" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


def test_progress_plots_the_target_figures_of_several_evaluations(evaluated, tmp_path, capsys):
    from metrics import progress

    out = tmp_path / "progress.png"
    assert progress.main([evaluated.out, evaluated.out, "--out", str(out), "--recogniser", "small"]) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| 0 |")]  # iteration 0, twice
    assert len(rows) == 2 and rows[0] == rows[1]
    figs = figures_by_key(evaluated.data)
    deid = figs[("identity", "deid_rate", "anonymized", "small")]["value"]
    assert f"{deid:.1%}" in rows[0] and "| target |" in printed
    assert Image.open(out).size[0] > 600
    # an existing plot is never replaced
    before = out.read_bytes()
    assert progress.main([evaluated.out, "--out", str(out)]) == 2
    assert out.read_bytes() == before


def test_progress_adds_up_the_training_time_of_resumed_segments(tmp_path):
    from metrics.progress import training_minutes

    log = tmp_path / "losses.jsonl"
    rows = [(50, 60.0), (100, 120.0), (150, 30.0), (200, 90.0)]  # resumed after iteration 100
    log.write_text("".join(json.dumps({"epoch": 0, "iter": i, "time": t, "losses": {}}) + "\n" for i, t in rows))
    assert training_minutes(str(log)) == {50: 1.0, 100: 2.0, 150: 2.5, 200: 3.5}


# ---- the fast path gives the figures of the code before it -----------------------------------------

def test_fast_path_gives_the_reference_figures(tiny, tmp_path):
    """metrics/reference.py is the measuring step before it was made fast (dlib's own network, one view
    at a time, ...): on the same images and seed, every figure it writes comes out the same."""
    cache = str(tmp_path / "cache.pt")
    outs = {}
    # the reference; the fast path measuring everything (and keeping the originals' and baselines'
    # measurements); the fast path again, reusing them
    for name, kw in (("reference", dict(reference=True)), ("cold", dict(cache=cache)), ("warm", dict(cache=cache))):
        out = run(options(tiny, tmp_path / name, no_dlib=False, attack_images=0, **kw), log=lambda *_: None)
        with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
            outs[name] = json.load(f)
    ref = figures_by_key(outs["reference"])
    check_every_figure(outs["reference"], ["dlib", "dlib (calibrated)", "sphereface", "small"], faces=False)
    assert outs["reference"]["protocol"]["measuring_path"].startswith("reference")
    assert outs["cold"]["protocol"]["cache"]["reused"] == 0 < outs["cold"]["protocol"]["cache"]["measured"]
    assert outs["warm"]["protocol"]["cache"] == {"path": cache, "reused": outs["cold"]["protocol"]["cache"]["measured"],
                                                 "measured": 0}
    for run_name in ("cold", "warm"):
        fast = figures_by_key(outs[run_name])
        check_every_figure(outs[run_name], ["dlib", "dlib (calibrated)", "sphereface", "small"])
        assert set(ref) <= set(fast) and len(ref) > 300
        for k, f in ref.items():
            # dlib's descriptors from PyTorch equal dlib's to float32 rounding; figures are rounded to 1e-6
            assert fast[k]["value"] == pytest.approx(f["value"], abs=2e-6), (run_name, k)
            assert fast[k]["n"] == f["n"], (run_name, k)
        for name, info in outs["reference"]["recognisers"].items():
            assert outs[run_name]["recognisers"][name]["threshold"] == pytest.approx(info["threshold"], abs=2e-6)
        assert set(fast) - set(ref) == {k for k in fast if k[0] == "sharpness" or k[1].startswith("yunet")}


def test_yunet_finds_no_face_where_there_is_none_and_finds_the_originals(tiny):
    from metrics.baselines import face_box
    from metrics.evaluation import face_found, yunet_detector
    from utils.images import to_uint8

    test = datasets.build_dataset(tiny.cfg, "test")
    det = yunet_detector(64)
    assert det.scales(64, 64) == [2.0, 1.0]
    items = [test[i] for i in range(6)]
    u8 = to_uint8(torch.stack([it["image"] for it in items]))
    boxes = [face_box(it["landmarks"], (64, 64)) for it in items]
    assert sum(face_found(det, u8[i], boxes[i]) for i in range(6)) >= 5  # synthetic faces are faces to YuNet
    grey = np.full((64, 64, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    assert not face_found(det, grey, boxes[0])
    assert not any(face_found(det, noise[i], boxes[i]) for i in range(6))
    # a face elsewhere in the image does not count
    assert not face_found(det, u8[0], (0, 0, 5, 5))


def test_faces_figures_are_rates_against_the_originals():
    from metrics.evaluation import Measured, summarise
    from metrics.report import faces_table

    m = Measured(labels=[0, 0, 1, 1])
    m.yunet = {ORIGINAL: [True, True, True, False], "anonymized": [True, False, True, False],
               "blur sigma=side/16": [False] * 4}
    m.sharpness = {"anonymized": [1.0, 0.5, 0.75, 0.75], "blur sigma=side/16": [0.1, 0.2, 0.1, float("nan")]}
    figures, _, _ = summarise(m, {}, None)
    figs = {(f["metric"], f["view"]): f["value"] for f in figures}
    assert figs[("yunet_rate", ORIGINAL)] == 0.75 and figs[("yunet_rate", "anonymized")] == 0.5
    assert figs[("yunet_rate_vs_original", "anonymized")] == pytest.approx(2 / 3, abs=1e-6)
    assert figs[("yunet_rate_vs_original", "blur sigma=side/16")] == 0
    assert figs[("laplacian_variance_ratio", "anonymized")] == 0.75
    blur = [f for f in figures if f["metric"] == "laplacian_variance_ratio" and f["view"] == "blur sigma=side/16"]
    assert blur[0]["value"] == pytest.approx(0.4 / 3, abs=1e-6) and blur[0]["n"] == 3  # a flat original: no ratio
    _, head, rows = faces_table(figures)
    assert head[1:] == ["face found (YuNet)", "YuNet rate / originals' rate", "sharpness / original's"]
    assert rows[0] == ["original", "75.0%", "", ""] and rows[1] == ["anonymized", "50.0%", "0.667", "0.750"]
    # no face in any original: no ratio (not a division by zero)
    m.yunet[ORIGINAL] = [False] * 4
    figs = {(f["metric"], f["view"]): f["value"] for f in summarise(m, {}, None)[0]}
    assert figs[("yunet_rate_vs_original", "anonymized")] is None


@pytest.mark.slow
def test_speed_benchmark_times_both_paths_and_finds_the_same_figures(tiny):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "evaluate.py"), "--checkpoint", tiny.ckpt,
                           "--max-images", str(N_IMAGES), "--batch-size", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "extensions:" in out and "OMP_NUM_THREADS=1" in out and "on 1 thread(s)" in out and "load average" in out
    row = re.search(r"^dlib recogniser \(chips \+ descriptor\)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+"
                    r"([\d.]+)x$", out, re.M)
    assert row and min(float(row[k]) for k in (1, 2, 3)) > 0, out
    assert re.search(r"^fast: .* cache: 0 reused", out, re.M), out
    assert re.search(r"^fast-warm: .* cache: [1-9]\d* reused, 0 measured", out, re.M), out
    assert re.search(r"^whole evaluation \(wall\)(\s+[\d.]+){3}\s+[\d.]+x\s+[\d.]+x$", out, re.M), out
    for path in ("fast", "fast-warm"):
        assert re.search(rf"figures of {path}: \d+ of the reference, 0 missing, 0 differ", out), out


def test_threads_are_the_idle_cores_unless_chosen(monkeypatch, tiny, tmp_path):
    from metrics import evaluation as ev

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(ev.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(ev.torch, "get_num_threads", lambda: 2)
    for load, threads in ((0.2, 2), (0.9, 1), (4.0, 1)):
        monkeypatch.setattr(ev, "busy_cores", lambda load=load: load)
        assert ev.evaluation_threads(options(tiny, tmp_path)) == threads, load
    assert ev.evaluation_threads(options(tiny, tmp_path, threads=3)) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert ev.evaluation_threads(options(tiny, tmp_path)) == 2  # the user's choice stands
    with pytest.raises(ev.InferenceError, match="threads"):
        ev.evaluation_threads(options(tiny, tmp_path, threads=0))


def test_kept_measurements_are_found_by_their_face_and_part(tmp_path):
    from metrics.cache import MeasureCache, image_keys

    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    lm = torch.zeros(3, 5, 2)
    keys = image_keys(x, lm)
    assert len(set(keys)) == 3 and image_keys(x.clone(), lm) == keys
    assert image_keys(x, lm + 0.01) != keys  # other landmarks: another face
    calls = []

    def measure(idx):
        calls.append(list(idx))
        return np.array([[float(i), 2.0 * i] for i in idx])

    path = str(tmp_path / "c.pt")
    c = MeasureCache(path)
    assert c.lookup("part a", keys[:2], measure).tolist() == [[0, 0], [1, 2]]
    assert c.lookup("part a", keys, measure)[2].tolist() == [2, 4] and calls == [[0, 1], [2]]  # only the new face
    assert c.save() and not c.save()  # nothing new: not written again
    again = MeasureCache(path)
    assert again.lookup("part a", keys, measure).tolist() == [[0, 0], [1, 2], [2, 4]] and len(calls) == 2
    assert again.lookup("part b", keys[:1], measure).tolist() == [[0, 0]] and len(calls) == 3  # another part
    assert (again.hits, again.misses) == (3, 1)
    with open(path, "wb") as f:
        f.write(b"not a cache")
    assert MeasureCache(path).parts == {}  # a damaged file: measured again
