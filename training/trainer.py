"""The training loop: data, networks, the objective, checkpoints, logs and result pages.

One obvious path: ``train(cfg)`` sets up a run folder, builds the data and networks, optionally
resumes, then loops over epochs calling ``Objective.step``. Everything a run needs to be reproduced or
continued is written into its folder:

    config.yaml        the resolved configuration (defaults < YAML < command line)
    git_commit.txt     the commit of the code (and whether the tree had local changes)
    log.txt            the text log; losses.jsonl the machine-readable loss log
    checkpoint_eEEEE_iIIIIIII.pth.tar, checkpoint_latest.pth.tar   (atomic; see training/checkpoint.py)
    validation.jsonl   the held-out validation curve (training/validation.py)
    index.html         links to the pages, the log and the config (results/index.py)
    web/, test_web/    HTML pages of training batches (loss curves) and of the fixed validation batch
                       (validation curves)
    eval.json          the held-out evaluation at the end of training
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable

import torch
from tqdm import tqdm

import datasets
from datasets.loader import worker_init
from models import Networks
from models.memory_format import format_networks
from models.objective import Objective
from models.views import STEP_IMAGES, TRAINING_STEP_COLUMNS
from training import distributed
from training.checkpoint import (
    CheckpointError,
    check_training_checkpoint,
    load_checkpoint,
    load_state_strict,
    nonfinite_entries,
    restore_training_state,
    save_checkpoint,
    training_state,
)
from training.fr_pretrain import pretrain_face_recognizer
from training.heldout import ViewPasswords, evaluate, format_evaluation, views
from training.progress import SlowSteps, StepTimes, TrainingBar, step_key
from training.validation import VALIDATION_LOG, ValidationCurve, format_values, spread_over_identities
from utils.config import Config, ConfigError, dump_yaml
from utils.fileio import atomic_write_text, end_with_newline, unwritable
from utils.images import to_uint8

SPHEREFACE_HELP = ("The paper's configs fine-tune the pretrained SphereFace-20a of clcarwin/sphereface_pytorch "
                   "(file model/sphere20a_20171020.7z in that repository). Extract sphere20a_20171020.pth to "
                   "{path} (see pretrained_models/README.md), or set fr_pretrained: '' to train FR from scratch "
                   "(not the paper's setting).")


# ---- run folder and logs ----------------------------------------------------------------------

def new_run_dir(cfg: Config) -> str:
    """ckpt_dir/name, or name_2, name_3 ... when that folder already exists: never reuse a folder."""
    base = os.path.join(cfg.ckpt_dir, cfg.name)
    path, k = base, 1
    while os.path.exists(path):
        k += 1
        path = f"{base}_{k}"
    os.makedirs(path)
    return path


def check_run_outputs(cfg: Config) -> None:
    """The run's folder can be written: checked before any work (data, networks, FR pre-training)."""
    key, folder = ("resume", os.path.dirname(os.path.abspath(cfg.resume))) if cfg.resume else ("ckpt_dir", cfg.ckpt_dir)
    why = unwritable(folder)
    if why:
        raise ConfigError(f"config: {key}: cannot write the run in {folder}: {why}")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite: training stopped (the message says what was saved)."""


def git_description() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)\n"
    if not commit:
        return "unknown (not a git checkout)\n"
    return commit + (" (with uncommitted changes)" if dirty else "") + "\n"


class RunLog:
    """log.txt (text) and losses.jsonl (one JSON object per logged iteration), appended line by line.

    Without a run folder (``run_dir=None``) the lines are kept in memory until ``start(run_dir)``, so
    that nothing is written before a run's inputs are checked. Safe to call from other threads
    (visdom's sender reports through it) and after close (ignored)."""

    def __init__(self, run_dir: str | None, enabled: bool = True):
        self.enabled = enabled
        self.lock = threading.Lock()
        self.pending: list[str] | None = []
        if enabled and run_dir is not None:
            self.start(run_dir)

    def start(self, run_dir: str) -> None:
        """Open the files in ``run_dir`` and write the lines logged so far."""
        if not self.enabled or self.pending is None:
            return
        self.text_path = os.path.join(run_dir, "log.txt")
        self.loss_path = os.path.join(run_dir, "losses.jsonl")
        end_with_newline(self.loss_path)
        self.text = open(self.text_path, "a", encoding="utf-8", buffering=1)
        self.losses = open(self.loss_path, "a", encoding="utf-8", buffering=1)
        with self.lock:
            pending, self.pending = self.pending, None
            self.text.writelines(pending)

    def __call__(self, message: str, console: bool = True) -> None:
        with self.lock:
            if not self.enabled:
                return
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            line = f"[{stamp}] {message}\n"
            if self.pending is not None:
                self.pending.append(line)
            else:
                self.text.write(line)
        if console:
            tqdm.write(message)

    def losses_line(self, epoch: int, iteration: int, elapsed: float, losses: dict) -> None:
        with self.lock:
            if self.enabled and self.pending is None:
                self.losses.write(json.dumps({"epoch": epoch, "iter": iteration, "time": round(elapsed, 3),
                                              "losses": {k: round(v, 6) for k, v in losses.items()}}) + "\n")

    def close(self) -> None:
        with self.lock:
            if self.enabled:
                self.enabled = False
                if self.pending is None:
                    self.text.close()
                    self.losses.close()


# ---- data order ---------------------------------------------------------------------------------

class EpochBatches(torch.utils.data.Sampler):
    """Batches of indices for one process: a permutation that depends only on (seed, epoch), cut into
    global batches of ``batch_size * world`` (a partial last one is dropped for training), each process
    taking its share; starts at ``start`` so a resumed run sees exactly the batches it had not seen."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                 start: int = 0):
        self.n, self.b, self.seed, self.epoch = n, batch_size, seed, epoch
        self.rank, self.world, self.start = rank, world, start

    def __len__(self) -> int:
        return max(0, self.n // (self.b * self.world) - self.start)

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch))
        step = self.b * self.world
        for g in range(self.start, self.n // step):
            chunk = order[g * step:(g + 1) * step]
            yield chunk[self.rank * self.b:(self.rank + 1) * self.b].tolist()


def batches_per_epoch(n: int, batch_size: int, world: int) -> int:
    return n // (batch_size * world)


# ---- networks -------------------------------------------------------------------------------------

def face_recognizer_classes(cfg: Config, train_set) -> int:
    if cfg.fr_num_classes > 0:
        if train_set.num_classes > cfg.fr_num_classes:
            raise ConfigError(f"config: fr_num_classes is {cfg.fr_num_classes} but the training labels go up to "
                              f"{train_set.num_classes - 1}; set fr_num_classes: 0 to size FR from the data")
        return cfg.fr_num_classes
    return train_set.num_classes


def load_pretrained_fr(cfg: Config, nets: Networks, log) -> None:
    path = cfg.fr_pretrained
    if not path:
        log("FR: no pretrained file (fr_pretrained is empty); " + (
            f"pre-trained on the training identities first ({cfg.fr_pretrain_epochs} epochs)" if cfg.fr_pretrain_epochs
            else "trained from scratch with the transformer"))
        return
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained SphereFace not found: {path}\n" + SPHEREFACE_HELP.format(path=path))
    state = load_checkpoint(path)
    state = state.get("state_dict_FR", state)  # a plain state dict, or one of our checkpoints
    load_state_strict(nets.FR, state, "SphereFace weights", path)
    log(f"FR: loaded {path}")


# ---- the trainer ----------------------------------------------------------------------------------

class Trainer:
    def __init__(self, cfg: Config, notes: Iterable[str] = ()):
        """``notes``: lines for the run's log, said after the device line (main_train.py's choice of
        OpenMP wait policy, made before torch was imported)."""
        self.cfg = cfg
        try:
            self.dist = distributed.init(cfg.device)
        except (RuntimeError, ValueError) as e:
            raise ConfigError(f"config: device: {e}") from None
        self.device = self.dist.device
        # Inputs first: nothing is written (run folder, config, logs) until everything is checked,
        # the checkpoint to resume from above all, whose folder the run continues in.
        resume_state = self._check_resume()
        check_run_outputs(cfg)
        torch.manual_seed(cfg.seed + self.dist.rank)
        self.batch = self._batch_per_process()
        self.stop_requested = False
        self.run_dir = os.path.dirname(os.path.abspath(cfg.resume)) if cfg.resume else None
        self.log = RunLog(None, enabled=self.dist.main)  # kept in memory until the run folder is written
        self.precision = precision = "bf16" if distributed.use_bf16(cfg.amp, self.device) else "fp32"
        self.log(f"device: {self.device}, processes: {self.dist.world_size}, batch {self.batch} per process, "
                 f"amp: {cfg.amp} ({precision}), channels_last: {cfg.channels_last}")
        for note in notes:
            self.log(note)
        self._build_data()
        self._build_networks()
        self.epoch, self.iter_in_epoch, self.global_iter = 0, 0, 0
        if cfg.resume:
            self.resume(cfg.resume, resume_state)
            del resume_state
        self.start_run_dir()
        self.val_images, self.val_pw = self.fixed_validation_batch()
        self.sites = None
        self.vis = None

    def _check_resume(self) -> dict | None:
        """The checkpoint to resume from, loaded and checked (None for a new run)."""
        if not self.cfg.resume:
            return None
        state = load_checkpoint(self.cfg.resume, map_location=self.device)
        check_training_checkpoint(state, self.cfg.resume)
        return state

    def _batch_per_process(self) -> int:
        cfg, world = self.cfg, self.dist.world_size
        if cfg.batch_size % world:
            raise ConfigError(f"config: batch_size {cfg.batch_size} is the total over {world} "
                              "processes and must divide evenly")
        return cfg.batch_size // world

    def _build_data(self) -> None:
        """The three splits (the main process first, so a synthetic dataset is generated once), checked."""
        cfg = self.cfg
        if self.dist.main:
            self.train_set = datasets.build_dataset(cfg, "train")
        distributed.barrier()
        if not self.dist.main:
            self.train_set = datasets.build_dataset(cfg, "train")
        self.val_set = datasets.build_dataset(cfg, "val")
        self.test_set = datasets.build_dataset(cfg, "test")
        if batches_per_epoch(len(self.train_set), self.batch, self.dist.world_size) == 0:
            raise ConfigError(f"config: batch_size {cfg.batch_size} is larger than the training set "
                              f"({len(self.train_set)} images)")
        if not torch.isfinite(torch.as_tensor(self.train_set.normalised_landmarks())).all():
            raise datasets.DatasetError(f"{self.train_set}: every training image needs five landmarks "
                                        "(the face recogniser aligns faces with them)")
        self.mean_landmarks = self.train_set.mean_landmarks()
        self.log(f"train: {self.train_set}; val: {self.val_set}; test: {self.test_set}")

    def _build_networks(self) -> None:
        """G, D, Q and FR on the device in the configured memory format (FR pretrained or pre-trained
        here), and the objective that trains them."""
        cfg = self.cfg
        num_classes = face_recognizer_classes(cfg, self.train_set)
        self.nets = Networks(cfg, num_classes)
        load_pretrained_fr(cfg, self.nets, self.log)
        self.nets.to(self.device)
        format_networks(self.nets, cfg.channels_last)
        if cfg.fr_pretrain_epochs and not cfg.resume:  # a resumed run has its FR in the checkpoint
            pretrain_face_recognizer(cfg, self.nets.FR, self.train_set, self.device, self.log)
        sync = distributed.average_gradients if self.dist.world_size > 1 else None
        self.objective = Objective(cfg, self.nets, self.device, seed=cfg.seed * 1000 + self.dist.rank, grad_sync=sync)
        self.log(f"FR classes: {num_classes}; parameters: " + ", ".join(
            f"{n} {sum(p.numel() for p in getattr(self.nets, n).parameters()) / 1e6:.2f}M"
            for n in ("G", "D", "Q", "FR")))

    def start_run_dir(self) -> None:
        """Everything checked: make the run folder (a resumed run continues in its checkpoint's) and
        write the configuration, the commit and the log so far. A resumed run keeps the files that
        are there; a configuration or commit that differs is written beside them."""
        if not self.dist.main:
            return
        if self.run_dir is None:
            self.run_dir = new_run_dir(self.cfg)
        tag = f"_resumed_i{self.global_iter:08d}" if self.cfg.resume else ""
        _write_new(os.path.join(self.run_dir, "config.yaml"), dump_yaml(self.cfg), tag)
        _write_new(os.path.join(self.run_dir, "git_commit.txt"), git_description(), tag)
        self.log.start(self.run_dir)
        self.log(f"run folder: {self.run_dir}")

    # ---- checkpoints ----
    def state(self) -> dict:
        return training_state(self.nets, self.objective, epoch=self.epoch, iter_in_epoch=self.iter_in_epoch,
                              global_iter=self.global_iter, config=self.cfg, mean_landmarks=self.mean_landmarks)

    def save(self, final: bool = False) -> str | None:
        if not self.dist.main:
            return None
        name = f"checkpoint_e{self.epoch:04d}_i{self.iter_in_epoch:08d}.pth.tar"
        path = os.path.join(self.run_dir, name)
        try:
            save_checkpoint(self.state(), path)
            _link_latest(path, os.path.join(self.run_dir, "checkpoint_latest.pth.tar"))
        except OSError as e:
            self.log(f"ERROR: could not save {path}: {e.strerror or e}. The previous checkpoint is intact; "
                     "training goes on, free some space to save the next one.")
            return None
        self.log(f"saved {path}", console=final)
        self._prune()
        return path

    def _prune(self) -> None:
        keep = self.cfg.keep_ckpts
        if keep <= 0:
            return
        ckpts = sorted(f for f in os.listdir(self.run_dir) if f.startswith("checkpoint_e") and f.endswith(".pth.tar"))
        for old in ckpts[:-keep]:
            os.remove(os.path.join(self.run_dir, old))

    def resume(self, path: str, ckpt: dict | None = None) -> None:
        if ckpt is None:
            ckpt = load_checkpoint(path, map_location=self.device)
        at = restore_training_state(ckpt, self.nets, self.objective, path, self.log)
        self.epoch, self.iter_in_epoch, self.global_iter = at.epoch, at.iter_in_epoch, at.global_iter
        if at.mean_landmarks is not None:
            self.mean_landmarks = at.mean_landmarks
        per_epoch = batches_per_epoch(len(self.train_set), self.batch, self.dist.world_size)
        if self.iter_in_epoch >= per_epoch:
            self.epoch, self.iter_in_epoch = self.epoch + 1, 0
        self.log(f"resumed from {path}: epoch {self.epoch}, iteration {self.iter_in_epoch} of {per_epoch}, "
                 f"{self.global_iter} done")

    # ---- views ----
    def fixed_validation_batch(self):
        n = min(len(self.val_set), self.batch, 8)
        if n == 0:
            return None, None
        chosen = spread_over_identities(self.val_set.labels, n)  # 8 different people where there are 8
        imgs = torch.stack([self.val_set[i]["image"] for i in chosen])
        self.val_titles = [f"validation image {i}" + ("" if self.val_set.labels is None else
                                                      f" (identity {self.val_set.labels[i]})") for i in chosen]
        # fixed passwords for the whole run, drawn from the seed; never written anywhere
        pw = ViewPasswords.draw(n, self.cfg.passwd_length, torch.Generator().manual_seed(self.cfg.seed + 99991))
        return imgs, pw

    def setup_outputs(self) -> None:
        if not self.dist.main:
            return
        from results.html import ResultsSite
        from results.index import write_run_index
        from results.loss_plot import VALIDATION_PANELS
        from results.visualizer import Visualizer

        losses = os.path.join(self.run_dir, "losses.jsonl")
        self.curve = ValidationCurve(self.val_set, self.cfg, self.device, self.run_dir, self.batch)
        self.sites = {
            "train": ResultsSite(os.path.join(self.run_dir, "web"), f"{self.cfg.name}: training batches", losses,
                                 intro="Training losses by phase (losses.jsonl), and pages of training batches."),
            "val": ResultsSite(os.path.join(self.run_dir, "test_web"), f"{self.cfg.name}: validation",
                               os.path.join(self.run_dir, VALIDATION_LOG), VALIDATION_PANELS, "values",
                               intro=f"Measured every {self.cfg.val_freq} iterations on {self.curve.images} "
                                     "validation images of identities not trained on (validation.jsonl), and pages "
                                     "of a fixed validation batch with fixed random passwords (not shown).")}
        for site in self.sites.values():
            site.write_index()
        write_run_index(self.run_dir, f"{self.cfg.name}: run {os.path.basename(self.run_dir)}")
        self.vis = Visualizer.from_config(self.cfg, self.run_dir, log=lambda m: self.log(m))

    @staticmethod
    def training_images(batch: dict, fake: dict, n: int = 4) -> dict:
        """A step's batch and the images it generated (``StepResult.images``: training mode, as the
        objective saw them), as uint8 columns."""
        imgs = [batch["image"][:n]] + [fake[k][:n] for k in STEP_IMAGES]
        return {c: to_uint8(x) for c, x in zip(TRAINING_STEP_COLUMNS, imgs)}

    def pages(self, batch: dict, fake: dict) -> None:
        if not self.dist.main:
            return
        self.sites["train"].add_page(self.epoch, self.global_iter, self.training_images(batch, fake))
        if self.val_images is not None:
            G = self.nets.G
            G.eval()
            with torch.no_grad(), self.objective.autocast():
                out = views(G, self.val_images.to(self.device), self.val_pw, self.cfg.use_minus_one)
            G.train()
            self.sites["val"].add_page(self.epoch, self.global_iter, {c: to_uint8(x) for c, x in out.items()},
                                       row_titles=self.val_titles)
            if self.vis:
                self.vis.show_images({c: to_uint8(x[:4]) for c, x in out.items()}, title="validation")

    def validate(self, start: float) -> None:
        """One point of the validation curve: measured, logged, plotted (page and visdom)."""
        values = self.curve.measure(self.nets, self.epoch, self.global_iter, time.time() - start,
                                    self.objective.autocast)
        self.log(format_values(self.global_iter, values, self.curve.images), console=False)
        self.sites["val"].write_index()
        if self.vis:
            self.vis.plot_validation(self.global_iter, values)

    # ---- the loop ----
    def install_interrupt_handler(self):
        def handler(signum, frame):
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = True
            tqdm.write("interrupted: saving a checkpoint after this step (Ctrl-C again to quit at once)")
        try:
            return signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread
            return None

    def run(self) -> dict | None:
        cfg = self.cfg
        self.setup_outputs()
        previous = self.install_interrupt_handler()
        start = time.time()
        per_epoch = batches_per_epoch(len(self.train_set), self.batch, self.dist.world_size)
        ckpt_every = max(1, per_epoch // max(1, cfg.ckpt_per_epoch))
        total_iters = per_epoch * cfg.epochs
        if cfg.max_iters:
            total_iters = min(total_iters, cfg.max_iters)
        self.log(f"{per_epoch} iterations per epoch, {cfg.epochs} epochs, stopping at iteration {total_iters}")
        bar = TrainingBar(total=total_iters, initial=self.global_iter, disable=not self.dist.main, unit="it",
                          dynamic_ncols=True, desc="train", time_limit_s=cfg.time_limit_min * 60)
        here = step_key(cfg, self.device, torch.get_num_threads(), self.precision, self.batch)
        slow = SlowSteps(self.log, bench=StepTimes().get(here))
        sums, count, last_logged, data_wait = {}, 0, time.time(), 0.0
        finished = self.global_iter >= total_iters
        try:
            while not finished and self.epoch < cfg.epochs:
                sampler = EpochBatches(len(self.train_set), self.batch, cfg.seed, self.epoch, self.dist.rank,
                                       self.dist.world_size, start=self.iter_in_epoch)
                loader = torch.utils.data.DataLoader(
                    self.train_set, batch_sampler=sampler, num_workers=cfg.workers,
                    pin_memory=self.device.type == "cuda", worker_init_fn=worker_init if cfg.workers else None)
                batches = iter(loader)
                while True:
                    t_wait = time.perf_counter()
                    batch = next(batches, None)  # the time spent here is the step waiting for data
                    data_wait += time.perf_counter() - t_wait
                    if batch is None:
                        break
                    step = self.objective.step(batch)
                    self.iter_in_epoch += 1
                    self.global_iter += 1
                    bar.update(1)
                    slow.step()
                    sums = {k: sums.get(k, 0) + v for k, v in step.losses.items()}
                    count += 1
                    it = self.global_iter
                    if it % cfg.print_freq == 0 or it == total_iters:
                        avg = {k: (v / count).item() for k, v in sums.items()}  # the only host sync
                        self.check_finite(avg, it - count + 1, it)
                        now = time.time()
                        sec_per_it = (now - last_logged) / count
                        wait_per_it = data_wait / count
                        sums, count, last_logged, data_wait = {}, 0, now, 0.0
                        speed = f"{sec_per_it:.2f} s/it, {cfg.batch_size / sec_per_it:.1f} img/s"
                        if self.device.type == "cuda":
                            speed += f", peak memory {torch.cuda.max_memory_allocated(self.device) / 2**30:.2f} GiB"
                        self.log(f"epoch {self.epoch} iter {it} ({speed}, waiting for data {wait_per_it:.3f} s/it): " +
                                 " ".join(f"{k} {v:.4f}" for k, v in avg.items()), console=False)
                        self.log.losses_line(self.epoch, it, now - start, avg)
                        bar.set_postfix(G=f"{avg['G']:.3f}", D=f"{avg['D']:.3f}", recon=f"{avg['recon']:.3f}")
                        if self.vis:
                            self.vis.plot_losses(it, avg)
                    timed_out = bool(cfg.time_limit_min) and (time.time() - start) > cfg.time_limit_min * 60
                    last = it >= total_iters or timed_out or self.stop_requested
                    if self.dist.main and (it % cfg.html_freq == 0 or last):  # a cut-short run has pages too
                        self.pages(batch, step.images)
                    if self.dist.main and self.curve.due(it, last):
                        self.validate(start)
                    if self.vis and it % cfg.display_freq == 0:
                        self.vis.show_images(self.training_images(batch, step.images), title="training batch")
                    if self.iter_in_epoch % ckpt_every == 0 and self.iter_in_epoch < per_epoch:
                        self.save()
                    if last:
                        finished = True
                        if timed_out:
                            self.log(f"time limit of {cfg.time_limit_min} min reached")
                        break
                if self.iter_in_epoch >= per_epoch:
                    self.log(f"epoch {self.epoch} done ({time.time() - start:.0f} s)")
                    self.save()
                    self.epoch, self.iter_in_epoch = self.epoch + 1, 0
            if self.stop_requested or self.iter_in_epoch:
                self.save(final=True)
        finally:
            bar.close()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if self.stop_requested:
            latest = os.path.join(self.run_dir, "checkpoint_latest.pth.tar")
            self.log(f"stopped by Ctrl-C; continue with --resume {latest}")
            self.close()
            raise KeyboardInterrupt  # the checkpoint is saved; the caller still learns of the interruption
        result = self.final_evaluation()
        cut = f" (time limit of {cfg.time_limit_min} min)" if self.global_iter < total_iters else ""
        self.log(f"reached iteration {self.global_iter} of {total_iters}{cut}; run folder {self.run_dir}")
        self.close()
        return result

    def check_finite(self, avg: dict, first: int, last: int) -> None:
        """Stop at the first logged loss average that is not finite (a NaN or an infinity in any step
        of iterations first..last makes it so): the averages are read here anyway, so this costs no
        extra pass and no extra host sync (with several processes, one all-reduce of one number per
        log line, so that they stop together). Saves the state (as a checkpoint if its weights are
        finite, else apart, for inspection) and raises TrainingDiverged."""
        bad = [k for k, v in avg.items() if not math.isfinite(v)]
        if not distributed.any_process(bool(bad), self.device):
            return
        what = f"the loss {', '.join(bad)} is" if bad else "a loss of another process is"
        msg = f"training stopped: {what} not finite (NaN or infinity) in iterations {first} to {last}"
        if self.dist.main:
            state = self.state()
            latest = os.path.join(self.run_dir, "checkpoint_latest.pth.tar")
            earlier = latest if os.path.exists(latest) else None
            if not nonfinite_entries(state):
                path = self.save(final=True)
                msg += f"; the weights are still finite: saved {path}" if path else "; no checkpoint could be saved"
            else:
                path = os.path.join(self.run_dir, f"diverged_e{self.epoch:04d}_i{self.iter_in_epoch:08d}.pth.tar")
                try:
                    save_checkpoint(state, path)
                    msg += f"; the weights are not finite either: saved them apart as {path} for inspection (commands "
                    msg += "refuse it)"
                except OSError as e:
                    msg += f"; the weights are not finite either (not saved: {e.strerror or e})"
                msg += f"; the last good checkpoint is {earlier}" if earlier else "; no checkpoint was saved before"
            msg += "; try lower learning rates (lr, G_lr, D_lr, FR_lr)"
            self.log("ERROR: " + msg, console=False)
        self.close()
        raise TrainingDiverged(msg)

    def final_evaluation(self) -> dict | None:
        if not self.dist.main or len(self.test_set) == 0:
            distributed.barrier()
            return None
        loader = datasets.make_loader(self.test_set, self.batch, shuffle=False, drop_last=False,
                                      workers=self.cfg.workers, device_type=self.device.type)
        with self.objective.autocast():
            result = evaluate(self.nets, loader, self.cfg, self.device, self.cfg.eval_batches, progress=True)
        result["iterations"] = self.global_iter
        self.log(format_evaluation(result))
        atomic_write_text(os.path.join(self.run_dir, "eval.json"), json.dumps(result, indent=2) + "\n")
        from results.index import write_run_index
        write_run_index(self.run_dir, f"{self.cfg.name}: run {os.path.basename(self.run_dir)}")
        distributed.barrier()
        return result

    def close(self) -> None:
        if self.vis:
            self.vis.close()
        self.log.close()


def _write_new(path: str, text: str, tag: str) -> None:
    """Write ``path``, or, when it exists with other contents, the same name with ``tag`` before the
    extension (a resumed run never replaces the record of how the run began)."""
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            if f.read() == text:
                return
        if tag:
            base, ext = os.path.splitext(path)
            path = f"{base}{tag}{ext}"
    atomic_write_text(path, text)


def _link_latest(path: str, latest: str) -> None:
    """checkpoint_latest.pth.tar as a hard link to the newest checkpoint, replaced atomically."""
    tmp = latest + ".tmp"
    if os.path.lexists(tmp):
        os.remove(tmp)
    try:
        os.link(path, tmp)
    except OSError:  # file systems without hard links: copy
        import shutil
        shutil.copyfile(path, tmp)
    os.replace(tmp, latest)


def train(cfg: Config, notes: Iterable[str] = ()) -> dict | None:
    trainer = Trainer(cfg, notes)
    try:
        return trainer.run()
    finally:
        distributed.cleanup()


def main(argv=None, notes: Iterable[str] = ()) -> int:
    from utils.config import make_config

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        print("usage: python main_train.py CONFIG.yaml [--key value ...]", file=sys.stderr)
        return 2
    try:
        cfg = make_config(argv[0], argv[1:])
        train(cfg, notes)
    except (ConfigError, CheckpointError, datasets.DatasetError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (TrainingDiverged, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
