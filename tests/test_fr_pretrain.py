"""Pre-training of the face recogniser (fr_pretrain_epochs): it learns the training identities, it
runs only on a fresh run, and what it learned is what the training run starts from."""
import os
import re

import pytest
import torch

import datasets
import training.trainer
from models import build_face_recognizer
from training.fr_pretrain import pretrain_face_recognizer
from utils.config import make_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def changed(cfg, **kw):
    return make_config(None, **{**cfg, **kw})


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    data_root = str(tmp_path_factory.mktemp("data"))
    return make_config(os.path.join(ROOT, "config", "smoke.yaml"), data_root=data_root,
                       ckpt_dir=str(tmp_path_factory.mktemp("ck")), synthetic_identities=20,
                       synthetic_images_per_id=4, batch_size=4, max_iters=1, workers=0, html_freq=1000,
                       time_limit_min=0.0, amp="none", channels_last=False, pool_size=3, display_id=0,
                       ngf=8, ndf=8, fr_pretrain_epochs=6, fr_pretrain_lr=3e-3, eval_batches=1)


def test_pretraining_learns_the_training_identities(cfg):
    torch.manual_seed(0)
    train_set = datasets.build_dataset(cfg, "train")
    FR = build_face_recognizer(cfg, train_set.num_classes)
    lines = []
    first = pretrain_face_recognizer(changed(cfg, fr_pretrain_epochs=1), FR, train_set,
                                     torch.device("cpu"), lines.append, batch_size=8)
    last = pretrain_face_recognizer(cfg, FR, train_set, torch.device("cpu"), lines.append, batch_size=8)
    assert last["loss"] < first["loss"]
    assert last["train_accuracy"] > 3 / train_set.num_classes  # well above chance
    assert len(lines) == 7 and "FR pre-training: epoch 6/6" in lines[-1]


def test_the_run_starts_from_the_pretrained_recogniser_and_resume_does_not_pretrain_again(cfg, monkeypatch):
    calls = []
    real = training.trainer.pretrain_face_recognizer

    def spy(c, FR, *a, **k):
        calls.append(FR)
        out = real(c, FR, *a, **k)
        spy.weights = {n: p.detach().clone() for n, p in FR.state_dict().items()}
        return out

    monkeypatch.setattr(training.trainer, "pretrain_face_recognizer", spy)
    trainer = training.trainer.Trainer(changed(cfg, FR_lr=0.0))  # FR frozen: stays as pre-trained
    assert calls == [trainer.nets.FR]
    trainer.run()
    for n, p in trainer.nets.FR.state_dict().items():
        torch.testing.assert_close(p, spy.weights[n], rtol=0, atol=0)
    log = open(os.path.join(trainer.run_dir, "log.txt")).read()
    assert "FR pre-training: epoch 6/6" in log
    # the step's speed and how long it waited for its batch: a stalling loader shows in the log
    assert re.search(r"iter 1 \([\d.]+ s/it, [\d.]+ img/s, waiting for data [\d.]+ s/it\)", log), log
    latest = os.path.join(trainer.run_dir, "checkpoint_latest.pth.tar")
    training.trainer.Trainer(changed(cfg, FR_lr=0.0, resume=latest, max_iters=2)).run()
    assert len(calls) == 1
