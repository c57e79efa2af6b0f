"""The benchmark scripts run and print the figures they promise (tiny sizes; the figures themselves are
measured by running the scripts, not here)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a full training step of the paper's networks

ROOT = Path(__file__).resolve().parents[1]


def test_train_step_benchmark_prints_its_figures():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "train_step.py"), "--batch", "2", "--size", "64",
                          "--steps", "1", "--warmup", "0", "--devices", "cpu"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert re.search(r"dominant convolution alone: fp32 \d+ GFLOP/s, bf16 \d+ GFLOP/s", out)
    steps = re.findall(r"cpu \(CPU\) (fp32|bf16)\s*: ([\d.]+) s/step .* ([\d.]+) img/s, "
                       r"(\d+) GFLOP/step, (\d+) GFLOP/s", out)
    assert [s[0] for s in steps] == ["fp32", "bf16"], out
    for _, sec, img_s, gflop, gflops in steps:
        assert float(sec) > 0 and abs(float(img_s) - 2 / float(sec)) < 0.02 * float(img_s) + 0.01
        assert int(gflop) > 100 and int(gflops) > 0  # the paper's networks at 64x64, batch 2: ~370 GFLOP
    assert re.search(r"bf16 speed-up over fp32: [\d.]+x", out)


def test_train_step_benchmark_times_the_networks_of_a_config():
    # --compile is left to the benchmark itself: inductor's compilation alone takes minutes on 2 cores
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "train_step.py"), "--batch", "2", "--size", "64",
                          "--steps", "1", "--warmup", "0", "--devices", "cpu", "--modes", "fp32",
                          "--config", str(ROOT / "config" / "demo.yaml")],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    steps = re.findall(r"cpu \(CPU\) (fp32)\s*: ([\d.]+) s/step .* (\d+) GFLOP/step", out)
    assert [s[0] for s in steps] == ["fp32"], out
    assert 0 < int(steps[0][2]) < 100  # the demo's narrow networks (the paper's: about 370 at this size)


def test_train_step_benchmark_records_the_figure_the_trainer_looks_up(tmp_path):
    import json
    import os

    import torch

    from training.progress import step_key
    from utils.config import make_config
    times = tmp_path / "times.json"
    smoke = str(ROOT / "config" / "smoke.yaml")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "train_step.py"), "--steps", "1", "--warmup", "0",
                          "--devices", "cpu", "--modes", "fp32", "--config", smoke, "--record"],
                         capture_output=True, text=True, timeout=600, check=True,
                         env={**os.environ, "FIT_STEP_TIMES": str(times), "OMP_NUM_THREADS": "1"}).stdout
    sec = float(re.search(r"recorded ([\d.]+) s/step for the trainer", out).group(1))
    cfg = make_config(smoke, amp="none")  # batch and size: the config's own (8 at 64x64)
    key = step_key(cfg, torch.device("cpu"), 1, "fp32", cfg.batch_size)
    assert abs(json.loads(times.read_text())[key] - sec) < 1e-3


@pytest.mark.slow
def test_detector_benchmark_prints_its_figures():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "detectors.py"), "--detectors", "hog", "yunet",
                          "--no-lfw", "--repeat", "1"], capture_output=True, text=True, timeout=600, check=True).stdout
    assert re.search(r"^\d+ photos, \d+ faces: original 3, small 15, tilted 18", out, re.M), out
    rows = {m[0]: m for m in re.findall(r"^(hog|yunet@0\.5)\s+.*?(\d+)/(\d+)\s+(\d+)/(\d+)"
                                          r"\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", out, re.M)}
    assert set(rows) == {"hog", "yunet@0.5"}, out
    for _name, *nums in rows.values():
        found, total, big, big_total, fp_faces, fp_none, ms_photo, ms_720p = map(int, nums)
        assert total == 72 and 0 <= found <= total and 0 <= big <= big_total and int(ms_720p) > 0
    assert int(rows["yunet@0.5"][1]) > int(rows["hog"][1])  # recall: YuNet finds more real faces than HOG


def test_video_benchmark_prints_speed_shares_and_ratios():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "anonymize.py"), "--skip-generator", "--faces", "1",
                          "--frames", "4", "--sequential"],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    assert re.search(r"CPU: .*, \d+ CPUs", out)
    runs = re.findall(r"1 face\(s\), round 1: (after|after, sequential):\s+([\d.]+) frames/s, (\d+) CPU ms/frame", out)
    assert [r[0] for r in runs] == ["after", "after, sequential"], out
    assert all(float(r[1]) > 0 and int(r[2]) > 0 for r in runs)
    shares = re.findall(r"stage shares:  decode (\d+)%.*generate (\d+)%.*encode (\d+)%", out)
    assert len(shares) == 2 and all(int(s[1]) > 0 for s in shares), out


def test_video_detection_benchmark_splits_searches_from_refinements():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "video_detection.py"), "--faces", "2", "--frames", "16",
                          "--search-every", "4", "8"], capture_output=True, text=True, timeout=300, check=True).stdout
    rows = re.findall(r"^search_every (\d+): detection ([\d.]+) s for 16 frames \(\d+ ms a frame\); "
                      r"search (\d+) x ([\d.]+) ms, refine (\d+) x ([\d.]+) ms; (\d+) tracks, (\d+) detections$",
                      out, re.M)
    assert [r[0] for r in rows] == ["4", "8"], out
    searches = {r[0]: int(r[2]) for r in rows}
    assert searches["4"] > searches["8"] >= 2  # every 4th (or 8th) detection frame, and the last one
    for r in rows:
        assert int(r[6]) == 2 and int(r[7]) >= 2 * 8 - 2  # both faces, on (nearly) every detection frame
