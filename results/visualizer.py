"""Live loss curves and image grids in visdom (default port 8097), without ever slowing training.

The caller's methods only copy their arguments and return: every network call happens on one
background daemon thread, with connect/read timeouts. Loss values are kept in memory (a few floats
per logged iteration) and the thread sends what the server has not seen yet, so nothing is lost
when it falls behind and a server started or restarted later gets the whole curves. Image grids
and other commands go through a bounded queue that drops the oldest entry when full: a stale grid
is worth nothing.

No server (or no visdom package) is said once, in one line, and then training goes on in silence;
the thread tries again every ``RETRY_S`` seconds. ``display_autostart`` starts a server on
loopback when none answers, its environment files inside the run folder, and stops it at close.
"""
from __future__ import annotations

import atexit
import collections
import logging
import math
import numbers
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlparse

import numpy as np

RETRY_S = 30.0             # seconds between attempts to reach a server that did not answer
TIMEOUT_S = (2.0, 10.0)    # connect and read timeouts of every request
QUEUE_SIZE = 16            # pending image grids / commands; the oldest is dropped beyond this
MAX_GRID_ROWS = 8          # batch items shown per image grid
SERVER_START_S = 20.0      # how long an autostarted server may take to answer
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def visdom_server_command(port: int, env_path: str, bind_local: bool = True) -> list[str]:
    """A command that runs visdom's server. ``python -m visdom.server`` first downloads its web
    assets and dies offline; calling ``run_server.main`` directly skips that download."""
    code = "import sys; sys.argv[0] = 'visdom'; from visdom.server.run_server import main; main()"
    cmd = [sys.executable, "-c", code, "-port", str(port), "-env_path", env_path]
    return cmd + (["-bind_local"] if bind_local else [])


def _stderr_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Visualizer:
    """visdom output of one training run; ``display_id`` 0 turns it into a no-op."""

    def __init__(self, display_id: int = 1, server: str = "http://localhost", port: int = 8097,
                 env: str = "main", autostart: bool = False, run_dir: str | None = None,
                 log: Callable[[str], None] | None = None):
        self.enabled = display_id > 0
        self.server, self.port, self.env = server, int(port), env
        self.autostart, self.run_dir = autostart, run_dir
        self._log = log or _stderr_line
        self._loss_win = str(display_id)
        self._image_wins: dict[str, str] = {}
        self._said: set[str] = set()
        self._closed = False
        if not self.enabled:
            return
        self._cond = threading.Condition()
        self._queue: collections.deque = collections.deque(maxlen=QUEUE_SIZE)
        # window -> (its title, curve name -> (iterations, values)); the losses' window first
        self._history: dict[str, tuple[str, dict[str, tuple[list[int], list[float]]]]] = {}
        self._losses_dirty = False
        self._busy = False
        self._stopping = False
        # worker-thread state
        self._client = None
        self._retry_at = 0.0
        self._gave_up = False
        self._sent: dict[tuple[str, str], int] = {}
        self._fresh: set[str] = set()
        self._server_proc: subprocess.Popen | None = None
        self._server_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="visdom", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, cfg: Mapping, run_dir: str | None = None,
                    log: Callable[[str], None] | None = None) -> Visualizer:
        """Build from the display_* keys of utils/config.py; ``run_dir`` holds an autostarted
        server's files (``run_dir/visdom``)."""
        return cls(cfg["display_id"], cfg["display_server"], cfg["display_port"],
                   cfg["display_env"], cfg["display_autostart"], run_dir, log)

    @property
    def url(self) -> str:
        return f"{self.server}:{self.port}"

    # ---- caller side: copy and return --------------------------------------------------------

    def plot_losses(self, iteration: int, losses: Mapping[str, float]) -> None:
        """Add one point per loss at global ``iteration``. Values must be Python (or numpy)
        numbers, not tensors: converting a tensor would wait for the device. Non-finite values
        are left out of the live plot (losses.jsonl keeps them)."""
        self._plot(self._loss_win, f"{self.env} losses", iteration, losses)

    def plot_validation(self, iteration: int, values: Mapping[str, float]) -> None:
        """One point of the validation curve (training/validation.py): one window per panel of
        results/loss_plot.py's VALIDATION_PANELS, beside the losses' window."""
        from results.loss_plot import VALIDATION_PANELS, group

        for k, (panel, names) in enumerate(group(list(values), VALIDATION_PANELS)):
            self._plot(f"{self._loss_win}_validation_{k}", f"{self.env} validation: {panel}", iteration,
                       {n: values[n] for n in names})

    def _plot(self, win: str, title: str, iteration: int, losses: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        points = []
        for name, value in losses.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"plot_losses: loss '{name}' must be a number, got "
                                f"{type(value).__name__} (call .item() when logging)")
            points.append((str(name), float(value)))
        it = int(iteration)
        with self._cond:
            if self._closed or self._gave_up:  # no visdom package: keep no history either
                return
            curves = self._history.setdefault(win, (title, {}))[1]
            for name, value in points:
                if math.isfinite(value):
                    xs, ys = curves.setdefault(name, ([], []))
                    xs.append(it)
                    ys.append(value)
            self._losses_dirty = True
            self._cond.notify()

    def show_images(self, images: Mapping[str, np.ndarray], title: str = "images") -> None:
        """Show a grid, one column per entry (uint8 HxWx3 or BxHxWx3, as utils.images.to_uint8
        returns), one row per batch item (at most MAX_GRID_ROWS). Each ``title`` has its own
        window (e.g. "training batch", "validation")."""
        if not self.enabled or not images:
            return
        names, cols = [], []
        for name, a in images.items():
            if not (isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim in (3, 4)
                    and a.shape[-1] == 3):
                raise ValueError(f"show_images: '{name}' must be a uint8 HxWx3 or BxHxWx3 array "
                                 f"(utils.images.to_uint8), got {type(a).__name__} "
                                 f"{getattr(a, 'dtype', '')} {tuple(getattr(a, 'shape', ()))}")
            a = a[None] if a.ndim == 3 else a
            if cols and a.shape[:3] != cols[0].shape[:3]:
                raise ValueError(f"show_images: '{name}' has shape {a.shape}, "
                                 f"'{names[0]}' has {cols[0].shape}")
            names.append(str(name))
            cols.append(a[:MAX_GRID_ROWS].copy())
        self._put(("images", title, names, cols))

    def save(self) -> None:
        """Ask the server to write the environment to its env_path (``ENV.json``)."""
        if self.enabled:
            self._put(("save",))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait (at most ``timeout`` s) until everything queued so far is handled; for tests and
        the end of a run, not for the training loop. True if done in time."""
        if not self.enabled:
            return True
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._losses_dirty or self._busy:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Send what is pending, save the environment, stop an autostarted server. Waits at most
        ``timeout`` seconds (the thread is a daemon: it never holds the process)."""
        if not self.enabled or self._closed:
            return
        with self._cond:
            self._queue.append(("save",))
            self._closed = self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self._stop_server()

    def _put(self, item: tuple) -> None:
        with self._cond:
            if self._closed:
                return
            self._queue.append(item)  # deque(maxlen): the oldest entry falls out when full
            self._cond.notify()

    # ---- worker thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._queue or self._losses_dirty or self._stopping):
                    self._cond.wait()
                if not (self._queue or self._losses_dirty):
                    break
                item = self._queue.popleft() if self._queue else None
                sync, self._losses_dirty = self._losses_dirty, False
                self._busy = True
            try:
                client = self._client_or_none()
                if client is not None:
                    if sync:
                        self._sync_losses(client)
                    if item is not None:
                        self._handle(client, item)
            except Exception as e:  # the server went away or refused a request
                self._client = None
                self._retry_at = time.monotonic() + RETRY_S
                self._say("lost", f"visdom: lost the server at {self.url} ({type(e).__name__}); "
                                  f"retrying every {RETRY_S:.0f} s, training goes on")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _say(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self._log(message)

    def _client_or_none(self):
        if self._client is not None:
            return self._client
        if self._gave_up or time.monotonic() < self._retry_at:
            return None
        try:
            self._client = self._connect()
        except ImportError:
            self._gave_up = True
            self._say("missing", "visdom: the visdom package is not installed, so there are no "
                                 "live curves (pip install visdom==0.2.4; display_id: 0 hides "
                                 "this line)")
            return None
        except Exception:
            if self.autostart and not self._stopping and self._server_proc is None:
                self._client = self._start_server()
            if self._client is None:
                self._retry_at = time.monotonic() + RETRY_S
                self._say("absent", f"visdom: no server answers at {self.url}, so there are no "
                                    f"live curves (start one with `python -m visdom.server -port "
                                    f"{self.port}` or set display_autostart: true; display_id: 0 "
                                    f"hides this line)")
                return None
        self._sent, self._fresh = {}, set()  # a (re)connected server gets the whole curves
        self._say("connected", f"visdom: live curves at {self.url} (env '{self.env}')")
        return self._client

    def _connect(self):
        client_class = _client_class()
        host = urlparse(self.server if "://" in self.server else "http://" + self.server).hostname
        return client_class(server=self.server, port=self.port, env=self.env,
                            raise_exceptions=True, use_incoming_socket=False,
                            direct=host in _LOOPBACK)

    def _start_server(self):
        """Start visdom's server on loopback; returns a connected client or None."""
        host = urlparse(self.server if "://" in self.server else "http://" + self.server).hostname
        if host not in _LOOPBACK:
            self._say("remote", f"visdom: display_autostart starts servers on this machine only, "
                                f"not at {self.server}")
            return None
        env_path = (os.path.join(self.run_dir, "visdom") if self.run_dir
                    else tempfile.mkdtemp(prefix="visdom-"))
        os.makedirs(env_path, exist_ok=True)
        log_path = os.path.join(env_path, "server.log")
        with self._server_lock:
            if self._stopping:
                return None
            with open(log_path, "ab") as log_file:
                self._server_proc = subprocess.Popen(
                    visdom_server_command(self.port, env_path), stdin=subprocess.DEVNULL,
                    stdout=log_file, stderr=subprocess.STDOUT)
            atexit.register(self._stop_server)
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline and not self._stopping:
            if self._server_proc.poll() is not None:
                break
            try:
                client = self._connect()
            except Exception:
                time.sleep(0.2)
                continue
            self._say("started", f"visdom: started a server at {self.url} (files and log in "
                                 f"{env_path}); it stops with training")
            return client
        if not self._stopping:
            self._say("start failed", f"visdom: could not start a server on port {self.port}; "
                                      f"see {log_path}")
        self._stop_server()
        return None

    def _stop_server(self) -> None:
        with self._server_lock:
            proc, self._server_proc = self._server_proc, None
        if proc is None:
            return
        atexit.unregister(self._stop_server)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _sync_losses(self, client) -> None:
        """Send each curve's points the server has not got yet, one trace per curve, one window
        per plot."""
        with self._cond:
            todo = [(win, title, name, xs[self._sent.get((win, name), 0):], ys[self._sent.get((win, name), 0):])
                    for win, (title, curves) in self._history.items() for name, (xs, ys) in curves.items()]
            started = {w for w, _ in self._sent}
            self._fresh.update(win for win in self._history if win not in started)  # nothing sent there yet
        for win, title, name, xs, ys in todo:
            if not xs:
                continue
            first = win in self._fresh  # the first trace replaces whatever the window held
            client.line(X=np.asarray(xs, dtype=np.float64), Y=np.asarray(ys, dtype=np.float64),
                        win=win, name=name, update=None if first else "append",
                        opts=dict(title=title, xlabel="iteration", showlegend=True) if first else None)
            self._fresh.discard(win)
            self._sent[(win, name)] = self._sent.get((win, name), 0) + len(xs)

    def _handle(self, client, item: tuple) -> None:
        if item[0] == "save":
            client.save([self.env])
        elif item[0] == "images":
            _, title, names, cols = item
            win = self._image_wins.setdefault(
                title, str(int(self._loss_win) + 1 + len(self._image_wins)))
            client.image(_grid(cols).transpose(2, 0, 1), win=win,
                         opts=dict(title=title, caption=" | ".join(names)))


def _grid(cols: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """Rows = batch items, columns = entries; white padding; uint8 HxWx3."""
    b, h, w = cols[0].shape[:3]
    out = np.full((b * (h + pad) + pad, len(cols) * (w + pad) + pad, 3), 255, np.uint8)
    for c, col in enumerate(cols):
        for r in range(b):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            out[y:y + h, x:x + w] = col[r]
    return out


_CLIENT_CLASS = None


def _client_class():
    """visdom's client with a timeout on every request (its own has none), imported lazily so
    that a missing package costs nothing until the worker thread needs it."""
    global _CLIENT_CLASS
    if _CLIENT_CLASS is None:
        import requests
        import visdom

        if logging.getLogger("visdom").level == logging.NOTSET:
            logging.getLogger("visdom").setLevel(logging.ERROR)  # its chatter about sockets

        class TimedVisdom(visdom.Visdom):
            def __init__(self, *args, direct: bool = False, **kwargs):
                self._http = requests.Session()
                self._http.trust_env = not direct  # no proxy between us and loopback
                super().__init__(*args, **kwargs)

            def _handle_post(self, url, data=None):
                r = self._http.post(url, data=data if data is not None else {}, timeout=TIMEOUT_S)
                if r.status_code != 200:
                    raise requests.HTTPError(f"HTTP {r.status_code} from {url}", response=r)
                return r.text

        _CLIENT_CLASS = TimedVisdom
    return _CLIENT_CLASS
