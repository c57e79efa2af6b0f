"""process_video: the reader and writer of protect/video_io.py wired together, frame batch by frame
batch, for the tests of timing, rotation and audio. The tool itself runs protect/video.py."""
from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from protect.video_io import VideoInfo, VideoReader, VideoWriter


def process_video(src: str | os.PathLike, dst: str | os.PathLike,
                  fn: Callable[[np.ndarray], np.ndarray] | None = None, *, batch_size: int = 16,
                  overwrite: bool = False, progress: bool | str = True, crf: int | None = None) -> VideoInfo:
    """Read ``src``, pass each batch of upright frames (B, H, W, 3) uint8 through ``fn`` (identity
    when None; it must return the same shape and dtype), write ``dst`` with the same timing,
    rotation and copied audio. Returns the source's info."""
    with VideoReader(src) as reader, VideoWriter(dst, reader.info, overwrite=overwrite, crf=crf) as writer:
        for batch in reader.batches(batch_size, progress=progress):
            out = batch.images if fn is None else fn(batch.images)
            if not isinstance(out, np.ndarray) or out.shape != batch.images.shape or out.dtype != np.uint8:
                raise ValueError(f"the frame function must return a uint8 array of shape {batch.images.shape}")
            writer.write_batch(out, batch.pts)
    return reader.info
