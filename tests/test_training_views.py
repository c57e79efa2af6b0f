"""What a real training run shows researchers: its result pages on disk and in Chromium, its live
curves in a real visdom server, and that an absent or hung server costs training nothing.

One tiny smoke run (module fixture) trains against a visdom server the test starts on loopback;
its run folder is shared by the page, browser and visdom tests.
"""
from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time

import pytest

import training.trainer
from models.views import COLUMN_LEGEND, TRAINING_STEP_COLUMNS, VIEW_COLUMNS
from results.html import LOSS_PLOT
from results.loss_plot import VALIDATION_PANELS, read_losses
from results.visualizer import Visualizer
from tests.browser import Chromium, artifact_path, require_chromium, serve_directory
from tests.test_visualizer import free_port, saved_windows, start_server, stop, traces
from tests.views_helpers import local_file, parse_page
from tests.views_helpers import tiny_config as _tiny
from training.validation import VALIDATION_LOG

pytestmark = pytest.mark.usefixtures("one_thread")

ITERS, HTML_FREQ = 3, 2  # pages at iterations 2 and 3 (the last one always gets a page)
VAL_FREQ = 2  # validation points at iterations 2 and 3 (the last one always gets one)
ENV = "views_test"


def tiny_config(data_root: str, ckpt_dir: str, **kw):
    return _tiny(data_root, ckpt_dir, **{"max_iters": ITERS, "html_freq": HTML_FREQ, "display_env": ENV,
                                         "val_freq": VAL_FREQ, **kw})


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_root):
    """A tiny training run whose visdom output goes to a real server; returns (run_dir, env_path)."""
    pytest.importorskip("visdom")
    base = tmp_path_factory.mktemp("views")
    port, env_path = free_port(), str(base / "visdom_env")
    server = start_server(port, env_path)
    try:
        cfg = tiny_config(data_root, str(base / "ck"), display_id=1, display_port=port)
        training.trainer.train(cfg)
        saved = os.path.join(env_path, ENV + ".json")
        deadline = time.monotonic() + 30  # Trainer.close waits 5 s at most; the sender may still be busy
        while not os.path.isfile(saved) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop(server)
    return str(base / "ck" / "smoke"), env_path


# ---- pages on disk ------------------------------------------------------------------------------

def test_pages_of_a_smoke_run_point_to_existing_images_and_the_index_links_every_page(run):
    run_dir, _ = run
    for site, columns in (("web", TRAINING_STEP_COLUMNS), ("test_web", VIEW_COLUMNS)):
        folder = os.path.join(run_dir, site)
        index = os.path.join(folder, "index.html")
        idx = parse_page(index)
        pages = sorted((f for f in os.listdir(folder) if f.endswith(".html") and f != "index.html"), reverse=True)
        assert pages == ["e0000_i00000003.html", "e0000_i00000002.html"]
        assert idx.links == ["../index.html"] + pages  # the run's index, then every page, newest first
        assert [local_file(index, s) for s in idx.imgs] == [os.path.join(folder, LOSS_PLOT)]
        assert os.path.getsize(os.path.join(folder, LOSS_PLOT)) > 5000
        for name in pages:
            page = os.path.join(folder, name)
            p = parse_page(page)
            header = p.header[1:] if site == "test_web" else p.header  # rows titled by image and identity
            assert header == list(columns), f"{site}/{name}: column titles {p.header}"
            assert [len(r) for r in p.rows[1:]] == [len(p.header)] * 4  # 4 training / validation images
            assert len(p.imgs) == len(columns) * 4
            missing = [s for s in p.imgs if not os.path.isfile(local_file(page, s))]
            assert not missing, f"{site}/{name}: missing images {missing}"
            assert "index.html" in p.links


def test_the_validation_page_shows_different_identities_and_a_legend(run):
    run_dir, _ = run
    with open(os.path.join(run_dir, "test_web", "e0000_i00000003.html"), encoding="utf-8") as f:
        html = f.read()
    p = parse_page(os.path.join(run_dir, "test_web", "e0000_i00000003.html"))
    identities = [row[0]["text"].split("identity ")[1].rstrip(")") for row in p.rows[1:]]
    # the tiny validation split has 3 identities: the 4 images are of all three (the first 4 are of one)
    assert len(identities) == 4 and len(set(identities)) == 3 and identities[3] == identities[0], identities
    for column, text in COLUMN_LEGEND.items():
        assert f"<dt>{column}</dt>" in html and text.replace("'", "&#x27;") in html or text in html


def test_validation_curve_is_logged_to_its_own_file_and_plotted_on_the_validation_page(run):
    run_dir, _ = run
    records = read_losses(os.path.join(run_dir, VALIDATION_LOG), key="values")
    assert [r["iter"] for r in records] == [2, 3]
    names = {n for _, members in VALIDATION_PANELS for n in members}
    for r in records:
        assert set(r["values"]) == names
        assert all(math.isfinite(v) for v in r["values"].values())
        assert r["values"]["psnr_gap"] == pytest.approx(
            r["values"]["psnr_recovered"] - r["values"]["psnr_anonymized"], abs=2e-6)
        assert 0 <= r["values"]["q_acc"] <= 1
    training_losses = read_losses(os.path.join(run_dir, "losses.jsonl"))
    assert not set(training_losses[0]["losses"]) & names  # training losses stay on the training page
    with open(os.path.join(run_dir, "log.txt"), encoding="utf-8") as f:
        log = f.read()
    assert "validation at iteration 2 (8 images): recovery PSNR" in log


def test_the_run_folder_index_links_pages_log_config_and_no_checkpoint(run):
    run_dir, _ = run
    links = parse_page(os.path.join(run_dir, "index.html")).links
    for rel in ("web/index.html", "test_web/index.html", "log.txt", "config.yaml", "eval.json",
                VALIDATION_LOG, "losses.jsonl"):
        assert rel in links
        assert os.path.isfile(os.path.join(run_dir, rel))
    assert not [ln for ln in links if ".pth" in ln]


@pytest.mark.browser
def test_chromium_loads_every_image_of_the_index_and_a_result_page(run):
    require_chromium()
    run_dir, _ = run
    with serve_directory(run_dir) as base, Chromium() as browser:
        for site in ("web", "test_web"):
            assert browser.open(f"{base}{site}/index.html") == 200
            imgs = browser.images()
            assert len(imgs) == 1 and imgs[0]["naturalWidth"] > 300, imgs  # the loss curves
            assert browser.horizontal_overflow() == 0
            links = [ln for ln in browser.links() if ln != "../index.html"]
            assert len(links) == 2
            if site == "test_web":
                browser.screenshot(artifact_path("training_run_index.png"))
            assert browser.open(f"{base}{site}/{links[0]}") == 200
            imgs = browser.images()
            assert len(imgs) == 4 * (len(VIEW_COLUMNS) if site == "test_web" else len(TRAINING_STEP_COLUMNS))
            assert [i["src"] for i in imgs if i["naturalWidth"] <= 0] == []
            assert min(i["width"] for i in imgs) >= 128 and browser.horizontal_overflow() == 0
            browser.screenshot(artifact_path(f"training_run_{site}_page.png"))
        assert browser.open(base) == 200  # the run folder: its index, not a directory listing
        assert set(browser.links()) >= {"web/index.html", "test_web/index.html", "log.txt", "config.yaml"}
        browser.screenshot(artifact_path("training_run_folder_index.png"))
    assert os.path.getsize(artifact_path("training_run_test_web_page.png")) > 10_000


# ---- visdom -----------------------------------------------------------------------------------------

def test_the_servers_saved_environment_holds_exactly_the_logged_losses(run):
    run_dir, env_path = run
    wins = saved_windows(env_path, ENV)
    logged = read_losses(os.path.join(run_dir, "losses.jsonl"))
    assert [r["iter"] for r in logged] == list(range(1, ITERS + 1))
    curves = traces(wins["1"])  # the loss window is display_id
    assert set(curves) == set(logged[0]["losses"])
    for name, (xs, ys) in curves.items():
        assert xs == [float(r["iter"]) for r in logged], name
        want = [r["losses"][name] for r in logged]
        # losses.jsonl rounds to 6 decimals; visdom gets the unrounded float
        assert ys == pytest.approx(want, abs=1e-6, rel=0), name
    titles = {w.get("title") for w in wins.values() if w["type"] == "image"}
    assert titles == {"validation", "training batch"}
    validation = read_losses(os.path.join(run_dir, VALIDATION_LOG), key="values")
    for k, (_, names) in enumerate(VALIDATION_PANELS):
        curves = traces(wins[f"1_validation_{k}"])
        assert set(curves) == set(names)
        for name, (xs, ys) in curves.items():
            assert xs == [float(r["iter"]) for r in validation]
            assert ys == pytest.approx([r["values"][name] for r in validation], abs=1e-6, rel=0)
    with open(os.path.join(run_dir, "log.txt"), encoding="utf-8") as f:
        log = f.read()
    assert "visdom: live curves at" in log and "no server answers" not in log


def _timed_run(data_root: str, ckpt_dir: str, **kw) -> tuple[float, float, str]:
    """Wall time of train(), time of the training loop up to its last logged iteration (from
    losses.jsonl: without the final evaluation and the at most 5 s that closing visdom may wait),
    and the text log."""
    # four logged iterations with a grid each, a page only at the last (its loss plots dominate a page)
    cfg = tiny_config(data_root, ckpt_dir, max_iters=4, html_freq=1000, display_freq=1, **kw)
    t0 = time.perf_counter()
    training.trainer.train(cfg)
    elapsed = time.perf_counter() - t0
    run_dir = os.path.join(ckpt_dir, "smoke")
    loop = read_losses(os.path.join(run_dir, "losses.jsonl"))[-1]["time"]
    with open(os.path.join(run_dir, "log.txt"), encoding="utf-8") as f:
        return elapsed, loop, f.read()


@contextlib.contextmanager
def silent_server():
    """A loopback port that accepts connections and never answers: a hung server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def within(slow: list[float], fast: list[float]) -> bool:
    # Generous: wall times on a shared machine vary; a training loop that waited on the network
    # (2 s connect and 10 s read timeouts per request) would still be far outside this.
    return min(slow) <= min(fast) * 1.5 + 2.0


def wait_for_visdom_threads(timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    for t in [t for t in threading.enumerate() if t.name == "visdom"]:
        t.join(max(0.0, deadline - time.monotonic()))


@pytest.mark.slow  # up to nine timed training runs
def test_training_with_no_server_is_as_fast_as_with_visdom_off(run, data_root, tmp_path, monkeypatch):
    """display_id 1 on a port where nothing listens (wall time) and on a server that never answers
    (training-loop time) vs display_id 0, in one process after the shared run warmed it up. On a busy
    machine a single run can be noisy, so up to three rounds are run in rotating order and the fastest
    of each kind compared."""
    errors = []  # of the sender threads, which outlive a run that trained against the hung server
    monkeypatch.setattr(threading, "excepthook", errors.append)
    port = free_port()  # nothing listens here
    kinds = {"off": dict(display_id=0), "absent": dict(display_id=1, display_port=port)}
    wall = {k: [] for k in ("off", "absent", "silent")}
    loop = {k: [] for k in wall}
    with silent_server() as hung_port:
        kinds["silent"] = dict(display_id=1, display_port=hung_port)
        for attempt in range(3):
            for kind in list(wall)[attempt:] + list(wall)[:attempt]:
                t, t_loop, log = _timed_run(data_root, str(tmp_path / f"{kind}{attempt}"), **kinds[kind])
                wall[kind].append(t)
                loop[kind].append(t_loop)
                said = [ln for ln in log.splitlines() if "visdom" in ln]
                if kind == "off":
                    assert said == []
                elif kind == "absent":  # said once, then silence
                    assert len(said) == 1 and f"no server answers at http://localhost:{port}" in said[0], said
            if within(wall["absent"], wall["off"]) and within(loop["silent"], loop["off"]):
                break
    wait_for_visdom_threads()
    assert not errors, [f"{e.exc_type.__name__}: {e.exc_value}" for e in errors]
    print(f"train() wall s: {wall}; training loop s: {loop}")
    assert within(wall["absent"], wall["off"]), f"no server: {wall['absent']} s; visdom off: {wall['off']} s"
    assert within(loop["silent"], loop["off"]), f"hung server: {loop['silent']} s; visdom off: {loop['off']} s"


def test_a_hung_server_leaves_no_error_behind_after_training(tmp_path, monkeypatch):
    """What Trainer.close() does, in order: vis.close() (waits at most 5 s), then log.close()."""
    errors = []
    monkeypatch.setattr(threading, "excepthook", errors.append)
    with silent_server() as hung_port:
        log = training.trainer.RunLog(str(tmp_path))
        vis = Visualizer(display_id=1, port=hung_port, log=log)
        vis.plot_losses(1, {"G": 1.0})
        vis.close(timeout=0.5)
        log.close()
    wait_for_visdom_threads()  # the server is gone: its connection is reset, the sender gives up
    assert not errors, [f"{e.exc_type.__name__}: {e.exc_value}" for e in errors]
