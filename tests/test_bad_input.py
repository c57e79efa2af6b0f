"""Bad input to every command, one table per class of issue 20. Extend a table to add a case.

1. NUMBERS: a value that is not a number, or out of range (options, config keys, checkpoints, files).
2. RECORDS: a record that does not fit its image is refused, naming the record.
3. PASSPHRASES: one visible passphrase (NFC, NFD, with a byte-order mark) gives one code; old records
   recover with the derivation that made them.
4. AFTER_THE_WORK: outputs that cannot be written, data_root a file, pruned checkpoints and Ctrl-C are
   found before any work, in one line, never as a traceback; training stops at a loss that is not finite.
5. UNCLEAR: messages that name the option or the file.

Every CLI case holds: the exit status, one line on stderr that names the culprit, no traceback, no
password in any message, and nothing written where the command writes.
"""
from __future__ import annotations

import json
import math
import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import anonymize
import evaluate
import main_train
import prepare_data
from bench import oversubscription
from metrics import progress
from models.passwords import Password, password_from_text, read_passphrase
from protect.protector import FacePasswords, FaceProtector
from protect.record import Record, RecordError
from tests.anonymize_helpers import save_small_checkpoint, synthetic_face
from tests.file_helpers import tree_digest
from training import trainer
from training.checkpoint import CheckpointError, InferenceModel, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "config", "smoke.yaml")
PASSPHRASE = "Zürich tall ship"  # in NFC; never in any message
NFD = unicodedata.normalize("NFD", PASSPHRASE)
TINY_RUN = ["--synthetic_identities", "10", "--synthetic_images_per_id", "4", "--batch_size", "4", "--max_iters", "4",
            "--workers", "0", "--print_freq", "1", "--html_freq", "1000", "--time_limit_min", "0", "--amp", "none",
            "--channels_last", "false", "--pool_size", "3", "--display_id", "0", "--ngf", "8", "--ndf", "8",
            "--eval_batches", "1"]


# ---- what every case shares ------------------------------------------------------------------------

def _modified_checkpoint(src: str, dst: str, edit: Callable[[dict], None]) -> str:
    ck = torch.load(src, weights_only=True)
    edit(ck)
    torch.save(ck, dst)
    return dst


def _nan_weight(ck):
    ck["state_dict_G"]["model.1.weight"][0, 0, 0, 0] = float("nan")


def _nan_landmarks(ck):
    ck["mean_landmarks"] = torch.full((5, 2), float("nan"))


def _far_landmarks(ck):
    ck["mean_landmarks"] = ck["mean_landmarks"] * 9


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Inputs shared by the cases: a checkpoint and its broken copies, a photo (alone and in a folder),
    a valid metrics.json with its losses.jsonl, and a file that is no folder."""
    base = tmp_path_factory.mktemp("bad_input")
    ckpt = save_small_checkpoint(str(base / "small.pth"))
    synthetic_ckpt = save_small_checkpoint(str(base / "synthetic.pth"), dataset="synthetic")
    from PIL import Image
    img, points = synthetic_face()
    Image.fromarray(img).save(base / "face.png")
    (base / "faces").mkdir()
    Image.fromarray(img).save(base / "faces" / "face.png")
    (base / "a_file").write_text("not a folder\n")
    run = base / "run"
    run.mkdir()
    (run / "losses.jsonl").write_text("".join(json.dumps({"epoch": 0, "iter": i, "time": 30.0 * i, "losses": {}}) + "\n"
                                              for i in (1, 2, 3)))
    evaluation = base / "eval"
    evaluation.mkdir()
    metrics = {"protocol": {"checkpoint": str(run / "checkpoint_e0000_i00000003.pth.tar"), "iteration": 3,
                            "images": 4},
               "figures": [{"section": "identity", "metric": "deid_rate", "view": "anonymized", "recogniser": "small",
                            "value": 0.75, "n": 4, "definition": ""},
                           {"section": "quality", "metric": "psnr", "view": "recovered", "recogniser": None,
                            "value": 21.5, "n": 4, "definition": ""}]}
    (evaluation / "metrics.json").write_text(json.dumps(metrics))
    return SimpleNamespace(
        base=base, ckpt=ckpt, synthetic_ckpt=synthetic_ckpt, photo=str(base / "face.png"), images=str(base / "faces"),
        points=points,
        a_file=str(base / "a_file"), run=run, eval=str(evaluation), metrics=metrics,
        nan_ckpt=_modified_checkpoint(ckpt, str(base / "nan.pth"), _nan_weight),
        nan_landmarks_ckpt=_modified_checkpoint(ckpt, str(base / "nan_lm.pth"), _nan_landmarks),
        far_landmarks_ckpt=_modified_checkpoint(ckpt, str(base / "far_lm.pth"), _far_landmarks))


def eval_dir(tmp, files, edit=None, losses_text=None) -> str:
    """A copy of the valid evaluation folder, its metrics.json edited (``edit`` gets the dict, or
    returns the text to write)."""
    folder = tmp / "edited_eval"
    folder.mkdir(exist_ok=True)
    data = json.loads(json.dumps(files.metrics))
    text = edit(data) if edit else None
    (folder / "metrics.json").write_text(text if isinstance(text, str) else json.dumps(data))
    if losses_text is not None:
        (tmp / "losses.jsonl").write_text(losses_text)
    return str(folder)


COMMANDS = {"anonymize": anonymize.main, "evaluate": evaluate.main, "progress": progress.main,
            "train": trainer.main, "prepare_data": prepare_data.main, "oversubscription": oversubscription.main,
            "fit-train": main_train.main}


def run_command(command: str, argv: list, capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.setenv("FIT_BAD_PW", PASSPHRASE)
    code = COMMANDS[command]([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def anon(*args, ckpt=None):
    """anonymize.py arguments: (input, -o output, checkpoint, password) and ``args``."""
    return lambda f, t: [f.photo, "-o", t / "out" / "o.png", "--checkpoint", ckpt(f) if ckpt else f.ckpt, "--quiet",
                         "--password-env", "FIT_BAD_PW", *args]


def ev(*args, ckpt=None):
    return lambda f, t: ["--checkpoint", ckpt(f) if ckpt else f.ckpt, "--dataset", "synthetic", "--out",
                         t / "out" / "eval", "--device", "cpu", "--no-dlib", *args]


def prog(*args, edit=None, losses_text=None):
    return lambda f, t: [eval_dir(t, f, edit, losses_text) if (edit or losses_text is not None) else f.eval,
                         "--out", t / "out" / "p.png", *args]


def train(*args):
    return lambda f, t: [SMOKE, "--data_root", t / "data", "--ckpt_dir", t / "out" / "ck", *TINY_RUN, *args]


@dataclass
class Case:
    id: str
    command: str
    argv: Callable  # (files, tmp_path) -> argv
    message: str  # in the one line on stderr
    code: int = 2


def _set(path: str, value):
    def edit(d):
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        d[last] = value
    return edit


def _drop(path: str):
    def edit(d):
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        del d[last]
    return edit


# ---- 1, 4 and 5: the command-line table -------------------------------------------------------------

NUMBERS = [
    Case("anonymize --min-face nan", "anonymize", anon("--min-face", "nan"), "--min-face must be a finite number"),
    Case("anonymize --max-gap inf", "anonymize", anon("--max-gap", "inf"), "--max-gap must be a finite number"),
    Case("anonymize --upsample -1", "anonymize", anon("--upsample", "-1"), "--upsample must be an integer >= 0"),
    Case("anonymize --mean-landmarks nan", "anonymize", anon("--mean-landmarks=" + ",".join(["nan"] * 10)),
         "mean landmarks must be finite numbers"),
    Case("anonymize with NaN weights", "anonymize", anon(ckpt=lambda f: f.nan_ckpt),
         "not finite (NaN or infinity) in [state_dict_G.model.1.weight]"),
    Case("anonymize with NaN mean_landmarks", "anonymize", anon(ckpt=lambda f: f.nan_landmarks_ckpt),
         "not finite (NaN or infinity) in [mean_landmarks]"),
    Case("anonymize with mean_landmarks off the frame", "anonymize", anon(ckpt=lambda f: f.far_landmarks_ckpt),
         "key 'mean_landmarks': mean landmarks lie outside the frame"),
    Case("evaluate with NaN weights", "evaluate", ev(ckpt=lambda f: f.nan_ckpt), "nan.pth: refused"),
    Case("prepare_data --min-face nan", "prepare_data", lambda f, t: [f.images, "-o", t / "out" / "lm.txt",
                                                                   "--min-face", "nan"],
         "--min-face must be a finite number >= 0, got nan"),
    Case("train --lr nan", "train", train("--lr", "nan"), "--lr must be a finite number >= 0, got nan"),
    Case("train --beta1 1", "train", train("--beta1", "1"), "--beta1 must be a finite number >= 0 and < 1"),
    Case("train --lambda_L1 -inf", "train", train("--lambda_L1", "-inf"), "--lambda_L1 must be a finite number"),
    Case("train --val_freq -1", "train", train("--val_freq", "-1"), "--val_freq must be an integer >= 0, got -1"),
    Case("train --val_batches 0", "train", train("--val_batches", "0"), "--val_batches must be an integer >= 1, got 0"),
    Case("train: val_freq -5 in a YAML file", "train", lambda f, t: [_yaml(t, "val_freq: -5\n")] + train()(f, t)[1:],
         "bad.yaml: key 'val_freq' must be an integer >= 0, got -5"),
    Case("bench/oversubscription.py --steps 0", "oversubscription", lambda f, t: ["--steps", "0"],
         "--steps must be an integer >= 1, got 0"),
    Case("bench/oversubscription.py --child-timeout nan", "oversubscription", lambda f, t: ["--child-timeout", "nan"],
         "--child-timeout must be a finite number > 0, got nan"),
    Case("bench/oversubscription.py --threads 2 0", "oversubscription", lambda f, t: ["--threads", "2", "0"],
         "--threads must be an integer >= 1, got 0"),
    Case("progress: a figure that is NaN", "progress", prog(edit=_set("figures", [
        {"section": "identity", "metric": "deid_rate", "view": "anonymized", "recogniser": "small",
         "value": float("nan")}])), "figures[0] (deid_rate, anonymized) must be a finite number"),
    Case("progress: a rate above 1", "progress", prog(edit=_set("figures", [
        {"section": "identity", "metric": "deid_rate", "view": "anonymized", "recogniser": "small", "value": 7}])),
         "must be a finite number >= 0 and <= 1, got 7"),
    Case("progress: images -4", "progress", prog(edit=_set("protocol.images", -4)),
         "protocol.images must be an integer >= 0"),
    Case("progress: a time that is NaN in losses.jsonl", "progress",
         lambda f, t: prog("--losses", t / "losses.jsonl", losses_text='{"iter": 1, "time": NaN}\n')(f, t),
         "losses.jsonl, line 1: 'time' must be a finite number"),
]

AFTER_THE_WORK = [
    Case("evaluate --out through a file", "evaluate",
         lambda f, t: ev()(f, t)[:5] + [os.path.join(f.a_file, "eval")] + ev()(f, t)[6:], "a_file is a file"),
    Case("evaluate --attack-images -3", "evaluate", ev("--attack-images", "-3"), "--attack-images must be an integer"),
    Case("evaluate: data_root a file", "evaluate", lambda f, t: ev("--data_root", f.a_file)(f, t), "a_file is a file"),
    Case("progress --out through a file", "progress",
         lambda f, t: [f.eval, "--out", os.path.join(f.a_file, "p.png")], "a_file is a file"),
    Case("progress: the checkpoint was pruned", "progress", prog(edit=_drop("protocol.iteration")),
         "metrics.json: its checkpoint"),
    Case("prepare_data -o through a file", "prepare_data",
         lambda f, t: [f.images, "-o", os.path.join(f.a_file, "lm.txt")], "a_file is a file"),
    Case("train: data_root a file", "train", lambda f, t: train("--data_root", f.a_file)(f, t), "a_file is a file"),
    Case("train: ckpt_dir through a file", "train", lambda f, t: train("--ckpt_dir", os.path.join(f.a_file, "c"))(f, t),
         "ckpt_dir: cannot write the run"),
]

UNCLEAR = [
    Case("anonymize --max-megapixels -1", "anonymize", anon("--max-megapixels", "-1"),
         "--max-megapixels must be a finite number > 0"),
    Case("anonymize: a password file that is not UTF-8", "anonymize",
         lambda f, t: anon()(f, t)[:-2] + ["--password-file", _latin1_file(t)], "is not UTF-8 text"),
    Case("anonymize: a model trained on synthetic faces, a password file that is not UTF-8", "anonymize",
         lambda f, t: anon(ckpt=lambda f: f.synthetic_ckpt)(f, t)[:-2] + ["--password-file", _latin1_file(t)],
         "is not UTF-8 text"),  # the error alone: the warning about the model comes once the inputs are good
    Case("evaluate --examples -2", "evaluate", ev("--examples", "-2"), "--examples must be an integer >= 0"),
    Case("train --max_iters -1", "train", train("--max_iters", "-1"), "--max_iters must be an integer >= 0"),
    Case("train: lr .nan in a YAML file", "train", lambda f, t: [_yaml(t, "lr: .nan\n")] + train()(f, t)[1:],
         "bad.yaml: key 'lr' must be a finite number"),
    Case("progress: metrics.json without 'checkpoint'", "progress", prog(edit=_drop("protocol.checkpoint")),
         "metrics.json: not an evaluation of evaluate.py (missing or malformed 'checkpoint')"),
    Case("progress: metrics.json that is not JSON", "progress", prog(edit=lambda d: "{"),
         "metrics.json: not valid JSON"),
    Case("progress --losses missing", "progress", lambda f, t: prog("--losses", t / "missing.jsonl")(f, t),
         "--losses"),
    Case("progress --recogniser unknown", "progress", prog("--recogniser", "dlb"),
         "--recogniser dlb: "),
]


def _latin1_file(tmp) -> str:
    path = tmp / "latin1.txt"
    path.write_bytes(PASSPHRASE.encode("latin-1") + b"\n")
    return str(path)


def _yaml(tmp, text: str) -> str:
    path = tmp / "bad.yaml"
    path.write_text(open(SMOKE).read() + text)
    return str(path)


# fit-train (main_train.main, the installed command) on a machine that other jobs keep busy, where it
# makes OpenMP wait passively: it says so in the run's log, not beside the error.
FIT_TRAIN = [
    Case("fit-train --val_batches 0", "fit-train", train("--val_batches", "0"),
         "--val_batches must be an integer >= 1"),
    Case("fit-train: ckpt_dir through a file", "fit-train",
         lambda f, t: train("--ckpt_dir", os.path.join(f.a_file, "c"))(f, t), "ckpt_dir: cannot write the run"),
]


@pytest.fixture
def busy_machine(monkeypatch):
    """A machine that other jobs keep busy, whose user chose no OpenMP wait policy (restored after)."""
    import utils.machine
    monkeypatch.setattr(utils.machine, "busy_cores", lambda *a, **k: 64.0)
    monkeypatch.setenv("OMP_WAIT_POLICY", "")  # recorded: the test's end restores the variable as it was
    monkeypatch.delenv("OMP_WAIT_POLICY")


@pytest.mark.parametrize("case", NUMBERS + AFTER_THE_WORK + UNCLEAR, ids=lambda c: c.id)
def test_a_bad_input_is_one_line_before_any_work(case, files, tmp_path, capsys, monkeypatch):
    one_line_before_any_work(case, files, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("case", FIT_TRAIN, ids=lambda c: c.id)
def test_fit_train_on_a_busy_machine_is_one_line_too(case, files, tmp_path, capsys, monkeypatch, busy_machine):
    one_line_before_any_work(case, files, tmp_path, capsys, monkeypatch)
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def one_line_before_any_work(case, files, tmp_path, capsys, monkeypatch):
    before = tree_digest(files.base)
    code, out, err = run_command(case.command, case.argv(files, tmp_path), capsys, monkeypatch)
    lines = err.strip().splitlines()
    assert code == case.code, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert case.message in lines[0], err
    assert PASSPHRASE not in err + out and NFD not in err + out
    assert not (tmp_path / "out").exists()  # nothing written where the command writes
    assert tree_digest(files.base) == before  # and no input changed


def test_the_valid_inputs_of_the_table_work(files, tmp_path, capsys, monkeypatch):
    """The cases fail for their one fault: the same inputs without it succeed."""
    code, out, err = run_command("progress", prog()(files, tmp_path) + ["--losses", files.run / "losses.jsonl"],
                                 capsys, monkeypatch)
    assert code == 0 and "| 3 | 2 | 4 |" in out, err  # iteration 3, at 1.5 minutes, 4 images
    code, out, err = run_command("anonymize", anon("--detector", "hog")(files, tmp_path), capsys, monkeypatch)
    assert code == 0, err


# ---- 4: Ctrl-C and a loss that is not finite ---------------------------------------------------------

@pytest.mark.parametrize("command", ["evaluate", "progress", "fit-train"])
def test_ctrl_c_is_one_line_and_status_130(command, files, tmp_path, capsys, monkeypatch, busy_machine):
    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    if command == "fit-train":
        monkeypatch.setattr(trainer, "train", interrupted)
        argv = train()(files, tmp_path)
    elif command == "evaluate":
        import metrics.evaluation
        monkeypatch.setattr(metrics.evaluation, "run", interrupted)
        argv = ev()(files, tmp_path)
    else:
        monkeypatch.setattr(progress, "read_point", interrupted)
        argv = prog()(files, tmp_path)
    try:
        code, _, err = run_command(command, argv, capsys, monkeypatch)
    except KeyboardInterrupt:  # would end the test session: a failure instead
        pytest.fail("Ctrl-C left the command as a KeyboardInterrupt traceback")
    assert code == 130 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    return tmp_path_factory.mktemp("train_data")


@pytest.mark.parametrize("weights, command", [("finite", "fit-train"), ("not finite", "train")])
def test_training_stops_at_the_first_loss_that_is_not_finite(weights, command, train_data, tmp_path, capsys,
                                                              monkeypatch, busy_machine):
    """Also: fit-train on a busy machine says its OpenMP wait policy in the run's log."""
    from models.objective import Objective

    step, calls = Objective.step, []

    def diverging(self, batch, *a, **k):
        result = step(self, batch, *a, **k)
        calls.append(1)
        if len(calls) == 2:
            result.losses["G"] = torch.tensor(float("nan"))
            if weights == "not finite":
                with torch.no_grad():
                    next(self.nets.G.parameters()).fill_(float("inf"))
        return result

    monkeypatch.setattr(Objective, "step", diverging)
    argv = [SMOKE, "--data_root", train_data, "--ckpt_dir", tmp_path / "ck", "--name", "run", *TINY_RUN]
    code, _, err = run_command(command, argv, capsys, monkeypatch)
    lines = err.strip().splitlines()
    assert code == 1 and "Traceback" not in err, err
    assert "training stopped: the loss G is not finite (NaN or infinity) in iterations 2 to 2" in lines[-1]
    assert len(calls) == 2  # stopped at the step's own log line, no further step
    run = tmp_path / "ck" / "run"
    if weights == "finite":  # resumable
        assert load_checkpoint(str(run / "checkpoint_latest.pth.tar"))["global_iter"] == 2
        assert "the weights are still finite: saved" in lines[-1]
    else:  # kept apart for inspection; every command refuses it
        assert not (run / "checkpoint_latest.pth.tar").exists()
        diverged = [p for p in os.listdir(run) if p.startswith("diverged_")]
        assert len(diverged) == 1 and diverged[0] in lines[-1] and "no checkpoint was saved before" in lines[-1]
        with pytest.raises(CheckpointError, match="not finite"):
            load_checkpoint(str(run / diverged[0]))
    log = (run / "log.txt").read_text()
    assert "ERROR: training stopped" in log
    assert ("OpenMP threads wait passively (OMP_WAIT_POLICY=PASSIVE" in log) == (command == "fit-train")


# ---- 2: records that do not fit their image ----------------------------------------------------------

@pytest.fixture(scope="module")
def anonymized(files):
    protector = FaceProtector(InferenceModel(files.ckpt))
    img, points = synthetic_face()
    out, rec = protector.anonymize(img, PASSPHRASE, landmarks=[points])
    return SimpleNamespace(protector=protector, img=img, points=points, out=out, rec=rec)


def _shift(dx):
    def edit(d):
        d["faces"][0]["transform"][2] += dx
    return edit


def _scale(k):
    """The crop scaled by k about its centre (which stays where the face is)."""
    def edit(d):
        a, b, tx, c, e, ty = d["faces"][0]["transform"]
        centre = (d["checkpoint"]["img_size"] - 1) / 2
        d["faces"][0]["transform"] = [k * a, k * b, k * tx + (1 - k) * centre, k * c, k * e, k * ty + (1 - k) * centre]
    return edit


def _twice(same_key):
    def edit(d):
        d["faces"].append(dict(d["faces"][0], key=d["faces"][0]["key"] if same_key else 1))
    return edit


RECORDS = [
    ("moved 100,000 px off the image", _shift(100_000), "faces[0]: its crop (centre"),
    ("scaled by 1e6", _scale(1e6), "px wide, but crops of faces in a 250x250 image are 16 to 2000 px wide"),
    ("scaled by 1e-3", _scale(1e-3), "px wide, but crops of faces in a 250x250 image are"),
    ("output.width 999999", _set("output.width", 999999), "made for a 999999x250 image, not this 250x250 one"),
    ("output.height NaN", _set("output.height", float("nan")), "key 'output.height' must be an integer"),
    ("a face listed twice", _twice(same_key=True), "faces[0] and faces[1] have the same key 0"),
    ("a face listed twice under two keys", _twice(same_key=False), "faces[0] and faces[1] are the same crop"),
    ("detector.min_face NaN", _set("detector.min_face", float("nan")), "key 'detector.min_face' must be a finite"),
    ("kdf 7", _set("kdf", 7), "key 'kdf' (the passphrase derivation) must be one of 1, 2"),
    ("mean landmarks NaN", _set("framing.mean_landmarks", [[float("nan")] * 2] * 5), "must be finite numbers"),
]


@pytest.mark.parametrize("edit,message", [r[1:] for r in RECORDS], ids=[r[0] for r in RECORDS])
def test_a_record_that_does_not_fit_its_image_is_refused(anonymized, edit, message):
    d = json.loads(anonymized.rec.to_json())
    edit(d)
    with pytest.raises(RecordError, match="^crafted.json: ") as caught:
        anonymized.protector.recover(anonymized.out, Record.from_dict(d, "crafted.json"), PASSPHRASE)
    assert message in str(caught.value) and PASSPHRASE not in str(caught.value)


def test_the_cli_names_the_record_it_refuses(files, anonymized, tmp_path, capsys, monkeypatch):
    from PIL import Image
    Image.fromarray(anonymized.out).save(tmp_path / "anon.png")
    d = json.loads(anonymized.rec.to_json())
    _shift(100_000)(d)
    (tmp_path / "crafted.json").write_text(json.dumps(d))
    code, out, err = run_command("anonymize", [tmp_path / "anon.png", "-o", tmp_path / "back.png", "--checkpoint",
                                               files.ckpt, "--recover", "--record", tmp_path / "crafted.json",
                                               "--quiet", "--password-env", "FIT_BAD_PW"], capsys, monkeypatch)
    assert code == 1 and "faces recovered: 0" in out and "Traceback" not in err
    assert f"{tmp_path / 'crafted.json'}: faces[0]: its crop" in err
    assert not (tmp_path / "back.png").exists()


def test_anonymization_refuses_crops_that_recovery_would_refuse(anonymized):
    twice = [anonymized.points, anonymized.points]  # the same face given twice
    with pytest.raises(RecordError, match="faces\\[0\\] and faces\\[1\\] are the same crop"):
        anonymized.protector.anonymize(anonymized.img, PASSPHRASE, landmarks=twice)
    with pytest.raises(RecordError, match="lies outside the 250x250 image"):
        anonymized.protector.anonymize(anonymized.img, PASSPHRASE, landmarks=[anonymized.points + 10_000])


def test_a_video_record_must_fit_its_video(files, tmp_path):
    from protect.video import VideoOptions, protect_video
    from protect.video_io import write_video_with_tone
    video = write_video_with_tone(str(tmp_path / "v.mp4"), [np.zeros((64, 96, 3), np.uint8)] * 4, 12, acodec=None)
    protector = FaceProtector(files.ckpt)
    rec = protector.record("video", "shared", protector.detector_info())
    rec.output = {"width": 96, "height": 64, "frames": 4}
    track = {"key": 0, "first_frame": 0, "transforms": [[2.0, 0, -20.0, 0, 2.0, -20.0]] * 4, "detected": [0]}
    for tracks, message in (([dict(track, first_frame=2)], "tracks[0] runs to frame 5, but the video has 4 frames"),
                            ([track, dict(track, key=1)], "tracks[0] (frame 0) and tracks[1] (frame 0) are the same"),
                            ([track, track], "tracks[0] and tracks[1] have the same key 0")):
        rec.tracks = tracks
        with pytest.raises(RecordError) as caught:
            parsed = Record.from_dict(rec.to_dict(), "v.mp4.record.json")
            protect_video(protector, video, str(tmp_path / "o.mp4"), PASSPHRASE, recover=True, record=parsed,
                          options=VideoOptions(progress=False))
        assert message in str(caught.value) and "v.mp4.record.json: " in str(caught.value)
    assert not (tmp_path / "o.mp4").exists()


# ---- 3: passphrases --------------------------------------------------------------------------------

PASSPHRASES = [  # (how it was typed or stored, the text a command reads)
    ("NFC", PASSPHRASE),
    ("NFD", NFD),
    ("UTF-8 file with a byte-order mark", "\ufeff" + PASSPHRASE),
    ("NFD after a byte-order mark", "\ufeff" + NFD),
]


@pytest.mark.parametrize("text", [p[1] for p in PASSPHRASES], ids=[p[0] for p in PASSPHRASES])
def test_one_visible_passphrase_gives_one_code(text, tmp_path):
    want = Password.from_passphrase(PASSPHRASE, 16)
    assert Password.from_passphrase(text, 16) == want
    assert password_from_text(text, 16) == want
    assert FacePasswords.from_text(text, 16).for_key(0) == want
    assert FacePasswords.per_face(text, 16).for_key(3) == FacePasswords.per_face(PASSPHRASE, 16).for_key(3)
    path = tmp_path / "pw.txt"
    path.write_bytes(text.encode("utf-8") + b"\r\n")  # as an editor saves it
    assert password_from_text(read_passphrase(file=str(path)), 16) == want
    assert password_from_text("\ufeffcode:0x1a2b", 16) == Password.from_code(0x1A2B, 16)


def test_recovery_with_any_form_of_the_passphrase(anonymized):
    exact = anonymized.protector.recover(anonymized.out, anonymized.rec, PASSPHRASE)
    assert anonymized.rec.kdf == 2 and json.loads(anonymized.rec.to_json())["kdf"] == 2
    for _, text in PASSPHRASES:
        assert np.array_equal(anonymized.protector.recover(anonymized.out, anonymized.rec, text), exact)


def test_records_made_before_normalisation_recover_with_the_old_derivation(anonymized):
    """A version 1 record (no 'kdf') was made from the passphrase as typed: recovery derives it so."""
    p = anonymized.protector
    old_code = Password.from_passphrase(NFD, 16, kdf=1)
    assert old_code != Password.from_passphrase(NFD, 16)  # the derivations differ for this text
    out, rec = p.anonymize(anonymized.img, FacePasswords(shared=old_code), landmarks=[anonymized.points])
    d = rec.to_dict()
    d["version"] = 1
    del d["kdf"]
    old = Record.from_dict(d, "old.json")
    assert old.kdf == 1
    exact = p.recover(out, old, old_code)
    assert np.array_equal(p.recover(out, old, NFD), exact)  # the text typed then, derived as then
    assert not np.array_equal(p.recover(out, old, PASSPHRASE), exact)  # derivation 1 kept NFC and NFD apart
    per_face = FacePasswords.per_face(NFD, 16)
    assert per_face.derived_by(1).for_key(0) != per_face.for_key(0)


def test_password_files_that_are_not_utf8_or_empty(tmp_path):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(PASSPHRASE.encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt is not UTF-8 text; save it as UTF-8$"):
        read_passphrase(file=str(latin1))
    from results.inference_pages import InferenceError, read_password_lines
    with pytest.raises(InferenceError, match="latin1.txt is not UTF-8 text; save it as UTF-8$"):
        read_password_lines(str(latin1), 16, count=1)
    bom_only = tmp_path / "bom.txt"
    bom_only.write_bytes(b"\xef\xbb\xbf\n")
    with pytest.raises(ValueError, match="bom.txt is empty"):
        read_passphrase(file=str(bom_only))


def test_numbers_in_a_record_or_checkpoint_are_not_nan(files):
    """The same checks reach the Python API (no command line in between)."""
    with pytest.raises(CheckpointError, match="not finite"):
        InferenceModel(files.nan_ckpt)
    with pytest.raises(ValueError, match="mean landmarks must be finite"):
        FaceProtector(InferenceModel(files.ckpt), mean_landmarks=[math.nan] * 10)
