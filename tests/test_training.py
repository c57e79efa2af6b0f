"""main_train.py and the training loop: config precedence, exact resume, safe checkpoints, bad input."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import training.trainer
from models.objective import Objective
from training import distributed
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.config import ConfigError, make_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def tiny(data_root, ckpt_dir, **kw):
    base = dict(data_root=data_root, ckpt_dir=str(ckpt_dir), synthetic_identities=10, synthetic_images_per_id=4,
                batch_size=4, max_iters=4, workers=0, print_freq=1, html_freq=1000, time_limit_min=0.0,
                amp="none", channels_last=False, pool_size=3, display_id=0, ngf=8, ndf=8)
    base.update(kw)
    return make_config(os.path.join(ROOT, "config", "smoke.yaml"), **base)


# ---- configuration ---------------------------------------------------------------------------

def test_command_line_wins_over_yaml_which_wins_over_defaults(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("lr: 0.0003\nbatch_size: 24\nname: yaml_name\n")
    cfg = make_config(str(y), ["--batch_size", "6", "--amp=bf16", "--channels_last", "false"])
    assert cfg.lr == 0.0003 and cfg.batch_size == 6 and cfg.amp == "bf16" and cfg.channels_last is False
    assert cfg.name == "yaml_name" and cfg.ndf == 64  # default kept


def test_unknown_keys_name_the_key_and_the_nearest(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("lamda_L1: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown config key 'lamda_L1' \(did you mean 'lambda_L1'\?\)"):
        make_config(str(y))
    with pytest.raises(ConfigError,
                       match=r"command line: unknown config key 'batchsize' \(did you mean 'batch_size'\?\)"):
        make_config(None, ["--batchsize", "3"])


@pytest.mark.parametrize("text,key", [("batch_size: '12'\n", "batch_size"), ("lr: fast\n", "lr"),
                                      ("channels_last: 1\n", "channels_last"), ("norm: group\n", "norm"),
                                      ("- a list\n", "mapping")])
def test_values_of_the_wrong_type_are_errors(tmp_path, text, key):
    y = tmp_path / "c.yaml"
    y.write_text(text)
    with pytest.raises(ConfigError, match=key):
        make_config(str(y))


@pytest.mark.parametrize("amx, avx512_bf16, expected",
                         [(False, False, False), (True, False, True), (False, True, True)])
def test_amp_auto_uses_bf16_only_where_the_cpu_computes_it_natively(monkeypatch, amx, avx512_bf16, expected):
    # On an AVX2-only CPU bf16 convolutions are emulated, many times slower than fp32.
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    cpu = torch.device("cpu")
    assert distributed.use_bf16("auto", cpu) is expected
    assert distributed.use_bf16("bf16", cpu) is True and distributed.use_bf16("none", cpu) is False
    with pytest.raises(ValueError, match="fp16"):
        distributed.use_bf16("fp16", cpu)
    with pytest.raises(ConfigError, match="amp"):
        make_config(os.path.join(ROOT, "config", "smoke.yaml"), amp="fp16")


def test_paper_configs_hold_the_papers_values():
    main = make_config(os.path.join(ROOT, "config", "main.yaml"))
    assert (main.passwd_length, main.use_minus_one, main.img_size, main.batch_size, main.epochs) == \
        (16, "half", 128, 48, 30)
    assert (main.lr, main.FR_lr, main.beta1, main.pool_size, main.gan_mode) == (1e-4, 1e-5, 0.5, 500, "lsgan")
    assert (main.lambda_G_recon, main.lambda_L1, main.lambda_rand_recon_L1, main.lambda_Feat) == (100, 10, 10, 2)
    other = make_config(os.path.join(ROOT, "config", "one_fourth_D_lr_half.yaml"))
    assert other.use_minus_one == "one_fourth" and other.D_lr == 5e-5 and other.FR_lr == 1e-5
    assert {k: v for k, v in other.items() if main[k] != v} == {"name": "one_fourth_D_lr_half",
                                                                "use_minus_one": "one_fourth", "D_lr": 5e-5}


# ---- a run and its folder -------------------------------------------------------------------------

@pytest.mark.slow  # two runs and a full held-out evaluation; the cut-short test covers a run by default
def test_a_few_smoke_iterations_end_to_end(data_root, tmp_path):
    cfg = tiny(data_root, tmp_path / "ck", max_iters=3, html_freq=2)
    result = training.trainer.train(cfg)
    run = tmp_path / "ck" / "smoke"
    for name in ("config.yaml", "git_commit.txt", "log.txt", "losses.jsonl", "eval.json",
                 "checkpoint_latest.pth.tar", "web/index.html", "test_web/index.html"):
        assert (run / name).exists(), name
    lines = [json.loads(x) for x in (run / "losses.jsonl").read_text().splitlines()]
    assert [x["iter"] for x in lines] == [1, 2, 3] and "recon" in lines[0]["losses"]
    assert result["images"] == len(__import__("datasets").build_dataset(cfg, "test"))  # no image dropped
    ckpt = load_checkpoint(str(run / "checkpoint_latest.pth.tar"))
    for key in ("state_dict_G", "state_dict_D", "state_dict_Q", "state_dict_FR", "optimizer_G", "optimizer_D",
                "objective", "rng", "config", "mean_landmarks", "epoch", "iter", "global_iter"):
        assert key in ckpt, key
    assert ckpt["global_iter"] == 3 and ckpt["mean_landmarks"].shape == (5, 2)
    assert len(ckpt["objective"]["pools"]["M"]["images"]) == 3  # pools are saved
    # a second run never reuses the folder
    training.trainer.train(tiny(data_root, tmp_path / "ck", max_iters=1))
    assert (tmp_path / "ck" / "smoke_2" / "log.txt").exists()


def test_a_run_cut_short_by_the_time_limit_still_writes_its_pages(data_root, tmp_path):
    run = tmp_path / "ck" / "smoke"
    training.trainer.train(tiny(data_root, tmp_path / "ck", max_iters=50, html_freq=1000, time_limit_min=1e-6))
    assert (run / "web" / "index.html").exists() and (run / "test_web" / "index.html").exists()
    assert (run / "eval.json").exists()
    last = (run / "log.txt").read_text().splitlines()[-1]
    assert "reached iteration 1 of 50 (time limit of 1e-06 min)" in last, last


def record_steps(monkeypatch):
    seen = []
    original = Objective.step

    def step(self, batch, passwords=None):
        out = original(self, batch, passwords)
        seen.append({k: v.item() for k, v in out.losses.items()})
        return out

    monkeypatch.setattr(Objective, "step", step)
    return seen


@pytest.mark.slow  # fourteen training steps in three runs
def test_resume_continues_exactly(data_root, tmp_path, monkeypatch):
    seen = record_steps(monkeypatch)
    training.trainer.train(tiny(data_root, tmp_path / "a", max_iters=7))  # 4 iterations per epoch: crosses an epoch
    straight = list(seen)
    seen.clear()
    training.trainer.train(tiny(data_root, tmp_path / "b", max_iters=3))
    latest = str(tmp_path / "b" / "smoke" / "checkpoint_latest.pth.tar")
    training.trainer.train(tiny(data_root, tmp_path / "b", max_iters=7, resume=latest))
    assert len(straight) == len(seen) == 7
    for i, (a, b) in enumerate(zip(straight, seen)):
        assert a == b, f"step {i + 1} differs after resume"
    run = tmp_path / "b" / "smoke"  # the first config stays; the resumed run's (max_iters 7) goes beside it
    assert "max_iters: 3" in (run / "config.yaml").read_text()
    assert "max_iters: 7" in (run / "config_resumed_i00000003.yaml").read_text()


def test_resume_checks_its_checkpoint_before_writing_anything(tmp_path, monkeypatch, capsys):
    run = tmp_path / "runs" / "old"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("name: the original run\n")
    (run / "checkpoint_latest.pth.tar").write_bytes(b"PK\x03\x04 cut short by a full disk")
    (run / "notes.txt").write_bytes(os.urandom(64))
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    monkeypatch.chdir(tmp_path)
    base = [os.path.join(ROOT, "config", "smoke.yaml"), "--data_root", str(tmp_path / "data"), "--ckpt_dir",
            str(tmp_path / "ck"), "--workers", "0"]
    for bad, why in ((run / "checkpoint_latest.pth.tar", "not a checkpoint"),
                     (run / "notes.txt", "not a checkpoint"),
                     (tmp_path / "missing.pth.tar", "checkpoint not found")):
        assert training.trainer.main(base + ["--resume", str(bad)]) == 2
        err = capsys.readouterr().err
        assert why in err and str(bad) in err and "weights_only" not in err
    torch.save({"state_dict_G": {}}, str(run / "generator_only.pth"))
    before["generator_only.pth"] = (run / "generator_only.pth").read_bytes()
    assert training.trainer.main(base + ["--resume", str(run / "generator_only.pth")]) == 2
    assert "not a training checkpoint (no state_dict_D, state_dict_Q, state_dict_FR)" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing written into its folder
    assert sorted(os.listdir(tmp_path)) == ["runs"]  # nor into the current folder, the data or checkpoint folders


def test_bad_device_is_a_one_line_error(tmp_path, capsys):
    args = [os.path.join(ROOT, "config", "smoke.yaml"), "--ckpt_dir", str(tmp_path / "ck"), "--device"]
    assert training.trainer.main(args + ["foo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown device 'foo'" in err
    assert not (tmp_path / "ck").exists()


def test_architecture_mismatch_names_the_keys(data_root, tmp_path):
    resnet = dict(which_model_netG="resnet_9blocks")
    training.trainer.train(tiny(data_root, tmp_path / "ck", max_iters=1, **resnet))
    latest = str(tmp_path / "ck" / "smoke" / "checkpoint_latest.pth.tar")
    with pytest.raises(CheckpointError,
                       match=r"state_dict_G.*model\.1\.weight: checkpoint \(8, 19, 7, 7\) vs model \(16, 19, 7, 7\)"):
        training.trainer.train(tiny(data_root, tmp_path / "ck", ngf=16, resume=latest, **resnet))


def test_missing_pretrained_spheface_says_where_it_comes_from(data_root, tmp_path):
    cfg = tiny(data_root, tmp_path / "ck", fr_pretrained=str(tmp_path / "nope.pth"), fr_num_classes=10574)
    with pytest.raises(FileNotFoundError, match="sphere20a_20171020"):
        training.trainer.train(cfg)


def test_missing_data_root_is_a_clear_error(tmp_path):
    cfg = tiny(str(tmp_path / "no_data"), tmp_path / "ck", dataset="CASIA")
    with pytest.raises(Exception, match="CASIA-WebFace"):
        training.trainer.train(cfg)


# ---- checkpoints survive crashes -------------------------------------------------------------------

KILL_CHILD = r"""
import sys, time, torch
sys.path.insert(0, {root!r})
from utils.fileio import atomic_save
def writer(f):
    f.write(b"x" * (1 << 20))
    f.flush()
    open({marker!r}, "w").close()
    time.sleep(60)
atomic_save({path!r}, writer)
"""


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    path, marker = str(tmp_path / "checkpoint_latest.pth.tar"), str(tmp_path / "writing")
    save_checkpoint({"global_iter": 41, "w": torch.arange(5)}, path)
    child = subprocess.Popen([sys.executable, "-c", KILL_CHILD.format(root=ROOT, marker=marker, path=path)])
    deadline = time.time() + 30
    while not os.path.exists(marker) and time.time() < deadline:
        time.sleep(0.05)
    assert os.path.exists(marker), "the writer never started"
    child.send_signal(signal.SIGKILL)
    child.wait()
    ckpt = load_checkpoint(path)
    assert ckpt["global_iter"] == 41 and torch.equal(ckpt["w"], torch.arange(5))


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(data_root, tmp_path, monkeypatch):
    trainer = training.trainer.Trainer(tiny(data_root, tmp_path / "ck", max_iters=1))
    first = trainer.save()
    assert first and os.path.exists(first)
    latest = os.path.join(trainer.run_dir, "checkpoint_latest.pth.tar")

    def full_disk(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    trainer.global_iter, trainer.iter_in_epoch = 5, 1
    assert trainer.save() is None
    monkeypatch.undo()
    assert load_checkpoint(latest)["global_iter"] == 0  # still the first one
    assert not [f for f in os.listdir(trainer.run_dir) if f.endswith(".tmp")]
    assert "No space left on device" in open(os.path.join(trainer.run_dir, "log.txt")).read()
    trainer.close()


@pytest.mark.slow  # a child process trains until the log appears, then is interrupted and resumed
def test_ctrl_c_saves_a_checkpoint_then_resume_works(data_root, tmp_path):
    ck = tmp_path / "ck"
    training.trainer.train(tiny(data_root, ck, max_iters=1))  # make sure the dataset exists before timing
    args = [sys.executable, os.path.join(ROOT, "main_train.py"), os.path.join(ROOT, "config", "smoke.yaml"),
            "--data_root", data_root, "--ckpt_dir", str(ck), "--name", "sigint", "--synthetic_identities", "10",
            "--synthetic_images_per_id", "4", "--batch_size", "4", "--max_iters", "100000", "--workers", "0",
            "--print_freq", "1", "--ngf", "8", "--ndf", "8", "--time_limit_min", "0", "--display_id", "0",
            "--pool_size", "3", "--amp", "none", "--channels_last", "false"]
    child = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = ck / "sigint" / "losses.jsonl"
    deadline = time.time() + 120
    while (not log.exists() or log.stat().st_size == 0) and time.time() < deadline:
        time.sleep(0.1)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 130, out  # a checkpoint is saved, and the exit code says "interrupted"
    assert "stopped by Ctrl-C" in out
    ckpt = load_checkpoint(str(ck / "sigint" / "checkpoint_latest.pth.tar"))
    assert ckpt["global_iter"] >= 1
    result = training.trainer.train(tiny(data_root, ck, max_iters=ckpt["global_iter"] + 1,
                                         resume=str(ck / "sigint" / "checkpoint_latest.pth.tar")))
    assert result is not None


def test_a_run_much_slower_than_the_recorded_bench_figure_says_so_in_its_log(data_root, tmp_path, monkeypatch):
    from training.progress import StepTimes, step_key
    cfg = tiny(data_root, tmp_path / "ck", max_iters=27, print_freq=100)
    times = StepTimes(str(tmp_path / "times.json"))
    times.record(step_key(cfg, torch.device("cpu"), torch.get_num_threads(), "fp32", cfg.batch_size), 1e-6)
    monkeypatch.setenv("FIT_STEP_TIMES", times.path)
    training.trainer.train(cfg)
    log = (tmp_path / "ck" / "smoke" / "log.txt").read_text()
    assert log.count("slow steps:") == 1 and "the figure bench/train_step.py recorded on this machine" in log
