"""Threads for the video passes: decoding, computing and encoding at the same time.

Every stage of a video pass spends its time in native code that releases Python's lock (FFmpeg's
decoder and encoder, YuNet, the generator's oneDNN convolutions, OpenCV), so stages on separate
threads overlap on separate cores. Each worker computes with ONE thread of its own (``one_thread``):
on a 2-core machine two single-threaded stages fill both cores without the barrier at the end of
every parallel region, which is what makes a multi-threaded stage slow as soon as another process
takes a core (measured: the generator ran 7 faces/s on one thread, 3.5 on two, beside a training
job). Results never depend on the threads: oneDNN's and YuNet's outputs are the same for any thread
count (tests/test_video_pipeline.py), and every stage keeps the frames in order.

* ``one_thread()``: PyTorch and YuNet (its own OpenMP runtime) compute on one thread in the
  calling thread; both settings are per thread and are restored on exit.
* ``prefetch(iterable, depth, busy)``: the items of ``iterable`` produced on a thread of their own,
  at most ``depth`` ahead of the consumer; the producer's time goes to ``busy`` (a one-item list).
* ``worker_pool(n)``: a thread pool whose workers compute on one thread each.
* ``Ordered(workers)``: calls run on such a pool, their results taken in the order they were
  submitted.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import importlib.util
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import torch

__all__ = ["one_thread", "prefetch", "worker_pool", "Ordered"]


@functools.cache
def _yuface_omp():
    """yuface's own OpenMP runtime (auditwheel renames it libgomp-HASH.so), or None."""
    spec = importlib.util.find_spec("yuface")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], os.pardir, "yuface.libs")
    for path in sorted(glob.glob(os.path.join(folder, "libgomp*.so*"))):
        with contextlib.suppress(OSError, AttributeError):
            lib = ctypes.CDLL(path)
            lib.omp_get_max_threads.restype = ctypes.c_int
            lib.omp_set_num_threads.argtypes = [ctypes.c_int]
            return lib
    return None


@contextlib.contextmanager
def one_thread():
    """PyTorch's and YuNet's computations in this thread use one thread (restored on exit)."""
    torch_threads = torch.get_num_threads()
    omp = _yuface_omp()
    omp_threads = omp.omp_get_max_threads() if omp is not None else None
    torch.set_num_threads(1)
    if omp is not None:
        omp.omp_set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        if omp is not None:
            omp.omp_set_num_threads(omp_threads)


_DONE = object()


def prefetch(iterable, depth: int, busy: list | None = None):
    """Iterate ``iterable`` on a thread of its own, ``depth`` items ahead. An exception in the
    producer is raised in the consumer; closing the generator early stops the producer."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            it = iter(iterable)
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    break
                finally:
                    if busy is not None:
                        busy[0] += time.perf_counter() - t
                if not put((True, item)):
                    return
            put((True, _DONE))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put((False, e))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _one_thread_worker() -> None:
    torch.set_num_threads(1)
    omp = _yuface_omp()
    if omp is not None:
        omp.omp_set_num_threads(1)


def worker_pool(workers: int) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads, each computing on one thread."""
    return ThreadPoolExecutor(max(1, int(workers)), thread_name_prefix="compute", initializer=_one_thread_worker)


class Ordered:
    """A pool of ``workers`` threads, each computing on one thread (``one_thread``); ``submit``
    returns once fewer than ``workers + 1`` calls are pending, ``results`` yields the finished
    results in submission order. Use as a context manager."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))
        self._pool = worker_pool(self.workers)
        self._pending: deque[Future] = deque()

    def submit(self, fn, *args) -> list:
        """Queue ``fn(*args)``; returns the results that had to be taken to make room, in order."""
        done = []
        while len(self._pending) > self.workers:
            done.append(self._pending.popleft().result())
        self._pending.append(self._pool.submit(fn, *args))
        return done

    def drain(self) -> list:
        done = [f.result() for f in self._pending]
        self._pending.clear()
        return done

    def __enter__(self) -> Ordered:
        return self

    def __exit__(self, *exc) -> None:
        for f in self._pending:
            f.cancel()
        self._pool.shutdown(wait=True)
