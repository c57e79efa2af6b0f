"""What the training loop says about its progress (training/progress.py), and how the validation
images and loss panels are chosen (training/validation.py, results/loss_plot.py)."""
from __future__ import annotations

import io
import os

import numpy as np

from results.loss_plot import LOSS_PANELS, VALIDATION_PANELS, group
from training.progress import SlowSteps, TrainingBar
from training.validation import spread_over_identities, values_of


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_the_bar_counts_toward_the_time_limit_when_it_comes_first():
    clock = Clock()
    bar = TrainingBar(total=1200, time_limit_s=450, clock=clock, file=io.StringIO())
    for _ in range(10):  # 10 steps in 10 s: the 450 s limit stops the run near iteration 450
        clock.t += 1.0
        bar.update(1)
    assert bar.total == 450 and "time limit" in bar.desc
    bar.close()


def test_the_bar_keeps_the_iteration_count_when_it_comes_first():
    clock = Clock()
    bar = TrainingBar(total=100, initial=40, time_limit_s=450, clock=clock, file=io.StringIO())
    for _ in range(10):
        clock.t += 1.0
        bar.update(1)
    assert bar.total == 100 and bar.desc == "train"
    plain = TrainingBar(total=100, clock=clock, file=io.StringIO())  # no time limit: a plain bar
    clock.t += 100
    plain.update(1)
    assert plain.total == 100
    bar.close(), plain.close()


def test_slow_steps_are_said_once_with_the_figures():
    clock, said = Clock(), []
    watch = SlowSteps(said.append, clock=clock)
    for step in range(1, 200):
        clock.t += 0.5 if step <= 60 else 2.0  # 4x slower from step 61
        watch.step()
    assert len(said) == 1
    assert "2.00 s per step" in said[0] and "4.0x" in said[0] and "steps 5-25 (0.50 s)" in said[0]
    assert "OMP_NUM_THREADS" in said[0] and "load average" in said[0]


def test_a_steady_run_and_a_few_slow_steps_say_nothing():
    clock, said = Clock(), []
    watch = SlowSteps(said.append, clock=clock)
    for step in range(1, 300):
        clock.t += 5.0 if step % 50 == 0 or step < 3 else 0.5  # pages, checkpoints, warm-up
        watch.step()
    assert said == []


def test_validation_images_are_spread_over_identities():
    labels = np.array([3, 3, 3, 5, 5, 7, 7, 7, 9, 1])
    chosen = spread_over_identities(labels, 5)
    assert chosen == [0, 3, 5, 8, 9] and len(set(labels[chosen])) == 5
    assert spread_over_identities(labels, 7) == [0, 3, 5, 8, 9, 1, 4]
    assert spread_over_identities(labels, 50) == sorted(spread_over_identities(labels, 50), key=lambda i: (
        list(labels[:i]).count(labels[i]), i)) and len(spread_over_identities(labels, 50)) == 10
    assert spread_over_identities(None, 3) == [0, 1, 2]


def test_every_loss_of_a_step_has_its_panel_and_unknown_names_are_still_drawn():
    import torch

    from models import Networks
    from models.objective import Objective
    from tests.test_objective import tiny_batch, tiny_cfg

    torch.manual_seed(0)
    cfg = tiny_cfg()
    emitted = list(Objective(cfg, Networks(cfg), "cpu").step(tiny_batch()).losses)
    cells = group(emitted)
    assert [title for title, _ in cells] == [title for title, _ in LOSS_PANELS]  # none left for "other"
    assert sorted(n for _, names in cells for n in names) == sorted(emitted)
    assert group(["G", "new_loss"])[-1] == ("other", ["new_loss"])
    assert len(LOSS_PANELS) <= 6


def test_the_validation_panels_draw_every_measured_value():
    result = {k: 0.5 for k in ("psnr_recovered", "psnr_anonymized", "psnr_wrong", "q_acc", "cos_recovered",
                               "cos_anonymized", "cos_wrong")}
    result["psnr_recovered"] = 21.0
    values = values_of(result)
    assert values["psnr_gap"] == 20.5
    cells = group(list(values), VALIDATION_PANELS)
    assert [t for t, _ in cells] == [t for t, _ in VALIDATION_PANELS]
    assert sorted(n for _, names in cells for n in names) == sorted(values)


def test_openmp_waits_passively_only_on_a_machine_already_busy():
    from main_train import passive_openmp_when_busy

    env = {}
    assert passive_openmp_when_busy(env, lambda: 0.3, cores=2) is None and env == {}
    said = passive_openmp_when_busy(env, lambda: 4.2, cores=2)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"} and "keep 4.2 of 2 cores busy" in said
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}  # the user's choice stays
    assert passive_openmp_when_busy(mine, lambda: 4.2, cores=2) is None and mine["OMP_WAIT_POLICY"] == "ACTIVE"


def test_busy_cores_is_what_other_processes_use_now_not_a_lagging_average():
    from utils.machine import _cpu_times, busy_cores

    def times(*pairs):
        it = iter(pairs)
        return lambda: next(it)

    # half of all jiffies busy over the interval on 2 cores: one core's worth; the load average says more
    assert busy_cores(0, lambda: (1.5, 0, 0), times((100, 1000), (150, 1100)), cores=2) == 1.0
    # a job that ended a few seconds ago: the load average still says 1.2, the CPUs are idle now
    assert busy_cores(0, lambda: (1.2, 0, 0), times((100, 1000), (100, 1100)), cores=2) == 0.0
    # a busy machine whose load average has not caught up yet: the smaller of the two
    assert busy_cores(0, lambda: (0.4, 0, 0), times((100, 1000), (200, 1100)), cores=2) == 0.4

    def no_proc():
        raise OSError("no /proc/stat")

    def no_loadavg():
        raise OSError("no load average")
    assert busy_cores(0, lambda: (0.7, 0, 0), no_proc, cores=2) == 0.7
    assert busy_cores(0, no_loadavg, times((0, 100), (100, 200)), cores=2) == 2.0
    assert busy_cores(0, no_loadavg, no_proc, cores=2) == 0.0
    if os.path.exists("/proc/stat"):
        busy, total = _cpu_times()
        assert 0 <= busy <= total


def test_a_run_slow_from_its_first_step_is_said_against_the_bench_figure():
    clock, said = Clock(), []
    watch = SlowSteps(said.append, clock=clock, bench=0.5)
    for _ in range(100):  # the whole run at 2 s per step: its own first steps are no help
        clock.t += 2.0
        watch.step()
    assert len(said) == 1
    assert "4.0x the figure bench/train_step.py recorded on this machine (0.50 s)" in said[0]


def test_a_run_as_fast_as_the_bench_figure_says_nothing():
    clock, said = Clock(), []
    watch = SlowSteps(said.append, clock=clock, bench=0.5)
    for _ in range(200):
        clock.t += 0.6
        watch.step()
    assert said == []


def test_step_times_round_trip_and_ignore_what_is_not_a_time(tmp_path):
    from training.progress import StepTimes
    path = tmp_path / "sub" / "times.json"
    times = StepTimes(str(path))
    assert times.get("k") is None  # no file yet
    times.record("k", 0.25)
    times.record("other", 1.5)
    assert StepTimes(str(path)).get("k") == 0.25 and StepTimes(str(path)).get("other") == 1.5
    path.write_text('{"k": "fast", "nan": NaN, "neg": -1, "ok": 2}')
    assert StepTimes(str(path)).read() == {"ok": 2.0}
    path.write_text("not json")
    assert StepTimes(str(path)).get("ok") is None
    import pytest
    with pytest.raises(ValueError, match="positive"):
        times.record("k", float("nan"))


def test_the_step_key_tells_apart_what_changes_a_step_time():
    import torch

    from training.progress import step_key
    from utils.config import make_config
    cfg = make_config(None)
    cpu = torch.device("cpu")
    base = step_key(cfg, cpu, 2, "bf16", 8)
    assert base == step_key(make_config(None), cpu, 2, "bf16", 8)
    others = {step_key(cfg, cpu, 1, "bf16", 8), step_key(cfg, cpu, 2, "fp32", 8), step_key(cfg, cpu, 2, "bf16", 4),
              step_key(make_config(None, ngf=32), cpu, 2, "bf16", 8),
              step_key(make_config(None, img_size=64), cpu, 2, "bf16", 8)}
    assert base not in others and len(others) == 5
