"""Live visdom output (results/visualizer.py) against a real visdom server started offline."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import results.visualizer as vz
from results.visualizer import QUEUE_SIZE, Visualizer, visdom_server_command

# Training imports torch long before the first plot; visdom imports torch too, and importing it
# here keeps that one-off import out of the timings below.
pytest.importorskip("visdom")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_server(port: int, env_path: str) -> subprocess.Popen:
    proc = subprocess.Popen(visdom_server_command(port, env_path), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not answers(port):
        assert proc.poll() is None and time.monotonic() < deadline, "visdom server did not start"
        time.sleep(0.1)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(10)


def saved_windows(env_path: str, env: str) -> dict:
    with open(os.path.join(env_path, env + ".json"), encoding="utf-8") as f:
        return json.load(f)["jsons"]


def traces(window: dict) -> dict:
    return {t["name"]: (t["x"], t["y"]) for t in window["content"]["data"]}


LOGGED = [(10, {"G_GAN": 0.75, "G_recon_L1": 0.125}), (20, {"G_GAN": 0.5, "G_recon_L1": 0.0625}),
          (30, {"G_GAN": 0.25, "G_recon_L1": 0.03125, "D_FR": 2.5})]


def test_losses_and_images_reach_a_real_server(tmp_path):
    port, env_path = free_port(), str(tmp_path / "env")
    server = start_server(port, env_path)
    try:
        vis = Visualizer(display_id=3, port=port, env="run_a", log=lambda m: None)
        for it, losses in LOGGED:
            vis.plot_losses(it, losses)
        vis.show_images({"real": np.zeros((2, 16, 16, 3), np.uint8),
                         "anonymized": np.full((2, 16, 16, 3), 200, np.uint8)}, "validation")
        vis.close(timeout=20)  # sends what is pending and saves the environment
    finally:
        stop(server)
    wins = saved_windows(env_path, "run_a")
    assert traces(wins["3"]) == {
        "G_GAN": ([10.0, 20.0, 30.0], [0.75, 0.5, 0.25]),
        "G_recon_L1": ([10.0, 20.0, 30.0], [0.125, 0.0625, 0.03125]),
        "D_FR": ([30.0], [2.5])}
    assert wins["4"]["type"] == "image" and wins["4"]["title"] == "validation"
    assert wins["4"]["width"] == 2 * 18 + 2 and wins["4"]["height"] == 2 * 18 + 2  # 2x2 grid


def test_no_server_costs_nothing_and_is_said_once(tmp_path, capsys, monkeypatch):
    port = free_port()
    vis = Visualizer(port=port, env="nobody")
    batch = np.zeros((8, 64, 64, 3), np.uint8)
    images = {"real": batch, "recovered": batch}
    # Counted, not timed: every connection attempt happens on the sender thread, never in the
    # caller's (a time bound alone is flaky on a busy machine; this one only catches a blocking call).
    connects = []
    real_connect = socket.socket.connect

    def spy(sock, *args, **kwargs):
        connects.append(threading.current_thread().name)
        return real_connect(sock, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", spy)
    t0 = time.perf_counter()
    for it in range(200):
        vis.plot_losses(it, {"G_GAN": 1.0 / (it + 1), "D": 0.5})
        vis.show_images(images)
    elapsed = time.perf_counter() - t0
    assert vis.flush(10)
    assert connects and set(connects) == {"visdom"}, connects
    for it in range(200, 250):  # later calls, after the failed attempt, say nothing more
        vis.plot_losses(it, {"G_GAN": 0.1})
    assert vis.flush(10)
    vis.close()
    assert elapsed < 2.0, f"400 calls took {elapsed * 1000:.1f} ms"  # one connect timeout is 2 s
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("visdom")]
    assert len(lines) == 1 and f"no server answers at http://localhost:{port}" in lines[0]
    assert "python -m visdom.server" in lines[0]


def test_a_server_started_later_gets_the_whole_curves(tmp_path, monkeypatch):
    monkeypatch.setattr(vz, "RETRY_S", 0.2)
    port, env_path = free_port(), str(tmp_path / "env")
    said = []
    vis = Visualizer(port=port, env="late", log=said.append)
    vis.plot_losses(*LOGGED[0])
    assert vis.flush(10) and len(said) == 1 and "no server" in said[0]
    server = start_server(port, env_path)
    try:
        time.sleep(0.3)  # past the retry delay
        for it, losses in LOGGED[1:]:
            vis.plot_losses(it, losses)
        vis.close(timeout=20)
    finally:
        stop(server)
    assert traces(saved_windows(env_path, "late")["1"])["G_GAN"] == ([10.0, 20.0, 30.0],
                                                                      [0.75, 0.5, 0.25])


def test_autostart_runs_a_server_inside_the_run_folder_and_stops_it(tmp_path):
    port, run_dir = free_port(), str(tmp_path / "run")
    cfg = {"display_id": 1, "display_server": "http://localhost", "display_port": port,
           "display_env": "auto", "display_freq": 10, "display_autostart": True}
    said = []
    vis = Visualizer.from_config(cfg, run_dir, log=said.append)
    for it, losses in LOGGED:
        vis.plot_losses(it, losses)
    assert vis.flush(30)
    assert answers(port)
    vis.close(timeout=20)
    assert not answers(port), "the autostarted server still runs after close()"
    assert any("started a server" in m for m in said) and not any("no server" in m for m in said)
    wins = saved_windows(os.path.join(run_dir, "visdom"), "auto")
    assert traces(wins["1"])["D_FR"] == ([30.0], [2.5])


def test_missing_visdom_package_is_said_once(monkeypatch):
    monkeypatch.setattr(vz, "_CLIENT_CLASS", None)
    monkeypatch.setitem(sys.modules, "visdom", None)  # makes `import visdom` fail
    said = []
    vis = Visualizer(port=free_port(), log=said.append)
    for it in range(20):
        vis.plot_losses(it, {"a": 1.0})
        assert vis.flush(10)
    vis.close()
    assert len(said) == 1 and "visdom package is not installed" in said[0]


def test_the_queue_is_bounded_and_drops_the_oldest(monkeypatch):
    gate = threading.Event()
    monkeypatch.setattr(Visualizer, "_client_or_none", lambda self: gate.wait(10) and None)
    vis = Visualizer(port=free_port(), log=lambda m: None)
    vis.plot_losses(0, {"a": 1.0})  # the worker takes this and then waits at the gate
    deadline = time.monotonic() + 5
    while not vis._busy:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for k in range(3 * QUEUE_SIZE):
        vis.show_images({"x": np.full((4, 4, 3), k, np.uint8)})
    kept = [item[3][0][0, 0, 0, 0] for item in vis._queue]
    assert kept == list(range(2 * QUEUE_SIZE, 3 * QUEUE_SIZE))
    gate.set()
    assert vis.flush(10)
    vis.close()


def test_display_id_zero_is_off_and_bad_input_is_refused():
    off = Visualizer(display_id=0)
    off.plot_losses(1, {"a": 1.0})
    off.show_images({"a": np.zeros((4, 4, 3), np.uint8)})
    off.close()
    assert not off.enabled and not hasattr(off, "_thread")
    vis = Visualizer(port=free_port(), log=lambda m: None)
    try:
        with pytest.raises(TypeError, match="loss 'a' must be a number"):
            vis.plot_losses(1, {"a": [1.0]})
        with pytest.raises(ValueError, match="'x' must be a uint8"):
            vis.show_images({"x": np.zeros((4, 4, 3), np.float32)})
        with pytest.raises(ValueError, match="'y' has shape"):
            vis.show_images({"x": np.zeros((2, 4, 4, 3), np.uint8),
                             "y": np.zeros((2, 5, 4, 3), np.uint8)})
    finally:
        vis.close()
