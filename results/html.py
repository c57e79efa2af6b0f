"""Static HTML result pages: tables of images, browsed with ``python -m http.server``.

Two uses share one page builder (``write_table_page``):

* ``ResultsSite`` -- a folder of pages written during training (``web/`` for training batches,
  ``test_web/`` for the fixed validation batch), one page per (epoch, iteration), with an
  ``index.html`` linking every page, newest first, under the run's loss curves.
* ``write_static_page`` -- one page for scripts (save_visual.py: one strip per test image;
  main_test_diff_passwds.py: one column per password).

Every link is relative, so serving either the run folder or the site folder shows everything.
Images are PNG files under ``images/`` whose names come only from the page (epoch, iteration or
the caller's page name) and the row and column numbers -- never from titles, so nothing a caller
puts in a title (let alone a password) reaches a file name. Pages and images are written
atomically, and nothing already written is replaced: a second page for the same epoch and
iteration (a resumed run) gets a ``_2``, ``_3``... suffix. The index and the loss plot are views,
rebuilt from what is on disk, so rebuilding them is idempotent.
"""
from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from dominate import document, tags
from PIL import Image

from models.views import COLUMN_LEGEND, VIEW_COLUMNS
from results.loss_plot import LOSS_PANELS, render_loss_plot
from utils.fileio import atomic_save_image, atomic_write_text

# Column titles of the training and validation pages (the spec's order).
TRAINING_COLUMNS = VIEW_COLUMNS

IMAGE_DIR = "images"
MIN_SIDE = 128  # images are shown at least this large (scaled up by whole factors, pixelated)
LOSS_PLOT = "losses.png"
_PAGE_RE = re.compile(r"^e(\d+)_i(\d+)(?:_(\d+))?\.html$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_STYLE = """
body { font-family: sans-serif; margin: 1em; }
table.results { border-collapse: collapse; }
table.results th, table.results td { padding: 3px; text-align: center; vertical-align: top; }
table.results th { font-weight: normal; font-size: 0.85em; max-width: 10em; }
table.results th.row { text-align: right; }
img.result { display: block; margin: 0 auto; image-rendering: pixelated; }
img.losses { max-width: 100%; height: auto; }
ul.pages li { margin: 0.15em 0; }
dl.legend { display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em; font-size: 0.9em; }
dl.legend dt { font-weight: bold; }
dl.legend dd { margin: 0; }
.note { color: #a33; }
"""


# ---- the one page builder --------------------------------------------------------------------

def write_table_page(page_path: str, title: str, rows: Iterable[Sequence[np.ndarray | None]],
                     columns: Sequence[str], row_titles: Sequence[str] | None = None,
                     image_stem: str | None = None, subtitle: str | None = None,
                     back_link: str | None = None, min_side: int = MIN_SIDE) -> int:
    """Write ``page_path``: a table whose cell (r, c) shows ``rows[r][c]`` (uint8 HxWx3, or None
    for an empty cell) under the title ``columns[c]``. Rows may be any iterable (a generator keeps
    a long page out of memory). Images go to ``images/{image_stem}_rRRRR_cCC.png`` beside the page,
    shown scaled up by a whole factor until their shorter side is at least ``min_side`` pixels.
    Columns named in models/views.py get a legend (what each image is; passwords are never shown).
    Returns the number of rows written. Refuses to replace an existing page or image.
    """
    if os.path.exists(page_path):
        raise FileExistsError(f"{page_path} exists; result pages are never replaced")
    folder = os.path.dirname(os.path.abspath(page_path))
    stem = image_stem or os.path.splitext(os.path.basename(page_path))[0]
    if not _NAME_RE.match(stem):
        raise ValueError(f"image stem {stem!r}: use letters, digits, '_', '.', '-' only")
    columns = [str(c) for c in columns]
    titles = list(row_titles) if row_titles is not None else None

    doc = document(title=title)
    with doc.head:
        tags.meta(charset="utf-8")
        tags.style(_STYLE)
    n = 0
    with doc:
        if back_link:
            tags.p(tags.a("\u2190 all pages", href=back_link))
        tags.h2(title)
        if subtitle:
            tags.p(subtitle)
        legend = [(c, COLUMN_LEGEND[c]) for c in columns if c in COLUMN_LEGEND]
        if legend:
            with tags.dl(cls="legend"):
                for c, text in legend:
                    tags.dt(c)
                    tags.dd(text)
        with tags.table(cls="results"):
            with tags.tr():
                if titles is not None:
                    tags.th()
                for c in columns:
                    tags.th(c)
            for r, row in enumerate(rows):
                row = list(row)
                if len(row) != len(columns):
                    raise ValueError(f"{page_path}: row {r} has {len(row)} images for "
                                     f"{len(columns)} columns")
                with tags.tr():
                    if titles is not None:
                        if r >= len(titles):
                            raise ValueError(f"{page_path}: row {r} has no row title "
                                             f"({len(titles)} given)")
                        tags.th(titles[r], cls="row")
                    for c, image in enumerate(row):
                        if image is None:
                            tags.td()
                            continue
                        _check_image(image, page_path, r, columns[c])
                        rel = f"{IMAGE_DIR}/{stem}_r{r:04d}_c{c:02d}.png"
                        target = os.path.join(folder, rel)
                        if os.path.exists(target):
                            raise FileExistsError(f"{target} exists; result images are never "
                                                  f"replaced")
                        atomic_save_image(Image.fromarray(image), target)
                        h, w = image.shape[:2]
                        scale = max(1, -(-min_side // min(h, w))) if min_side else 1
                        tags.td(tags.a(tags.img(src=rel, width=w * scale, height=h * scale, cls="result",
                                                alt=f"{columns[c]}, row {r}"), href=rel))
                n = r + 1
    if titles is not None and len(titles) != n:
        raise ValueError(f"{page_path}: {len(titles)} row titles for {n} rows")
    atomic_write_text(page_path, doc.render())
    return n


def _check_image(image, page_path: str, r: int, column: str) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3):
        what = (f"{type(image).__name__} {getattr(image, 'dtype', '')} "
                f"{tuple(getattr(image, 'shape', ()))}")
        raise ValueError(f"{page_path}: row {r}, column '{column}': expected a uint8 HxWx3 "
                         f"array, got {what}")


def as_table(rows, columns: Sequence[str] | None = None):
    """Accept either rows of images with column titles, or a mapping column title -> batch
    (BxHxWx3, or one HxWx3 image), as the training script has them. Returns (rows, columns)."""
    if isinstance(rows, Mapping):
        if columns is not None:
            raise ValueError("give the column titles either as the mapping's keys or as columns")
        columns = [str(k) for k in rows]
        batches = []
        for batch in rows.values():
            batch = np.asarray(batch)
            batches.append(batch[None] if batch.ndim == 3 else batch)
        sizes = {len(b) for b in batches}
        if len(sizes) > 1:
            raise ValueError("columns hold different numbers of images: "
                             + ", ".join(f"{c}: {len(b)}" for c, b in zip(columns, batches)))
        count = sizes.pop() if sizes else 0
        return ([b[i] for b in batches] for i in range(count)), columns
    if columns is None:
        raise ValueError("columns (the column titles) are required when rows is not a mapping")
    return rows, list(columns)


def _unused_stem(folder: str, stem: str) -> str:
    """``stem``, or ``stem_2``, ``stem_3``... : the first whose page and images do not exist."""
    images = os.path.join(folder, IMAGE_DIR)
    taken = set(os.listdir(images)) if os.path.isdir(images) else set()
    candidate, k = stem, 1
    while (os.path.exists(os.path.join(folder, candidate + ".html"))
           or any(t.startswith(candidate + "_r") for t in taken)):
        k += 1
        candidate = f"{stem}_{k}"
    return candidate


# ---- one static page (scripts) ---------------------------------------------------------------

def write_static_page(out_dir: str, name: str, title: str, rows, columns=None,
                      row_titles: Sequence[str] | None = None, subtitle: str | None = None) -> str:
    """Write ``out_dir/NAME.html`` (or ``NAME_2.html``... if taken) with its images under
    ``out_dir/images/``; returns the page path. ``rows``/``columns`` as in ``as_table``."""
    if not _NAME_RE.match(name):
        raise ValueError(f"page name {name!r}: use letters, digits, '_', '.', '-' only")
    os.makedirs(out_dir, exist_ok=True)
    stem = _unused_stem(out_dir, name)
    rows, columns = as_table(rows, columns)
    path = os.path.join(out_dir, stem + ".html")
    write_table_page(path, title, rows, columns, row_titles, image_stem=stem, subtitle=subtitle)
    return path


# ---- the training site -----------------------------------------------------------------------

class ResultsSite:
    """Pages of one run folder's ``web/`` or ``test_web/`` and their ``index.html``, under the
    curves of ``losses_path`` (a JSON-lines log, see results/loss_plot.py) drawn in ``panels``
    from each record's ``record_key`` mapping, and ``intro`` (a paragraph) when given."""

    def __init__(self, root_dir: str, title: str, losses_path: str | None = None,
                 panels=LOSS_PANELS, record_key: str = "losses", intro: str | None = None,
                 row_note: str | None = None):
        self.root_dir = root_dir
        self.title = title
        self.losses_path = losses_path
        self.panels = panels
        self.record_key = record_key
        self.intro = intro
        self.row_note = row_note

    def add_page(self, epoch: int, iteration: int, rows, columns: Sequence[str] | None = None,
                 row_titles: Sequence[str] | None = None) -> str:
        """Write the page of (epoch, iteration) and rebuild the index; returns the page path.

        ``rows``: rows of uint8 HxWx3 images with ``columns`` the column titles, or a mapping
        column title -> BxHxWx3 batch (then ``columns`` is None).
        """
        os.makedirs(self.root_dir, exist_ok=True)
        stem = _unused_stem(self.root_dir, f"e{int(epoch):04d}_i{int(iteration):08d}")
        rows, columns = as_table(rows, columns)
        path = os.path.join(self.root_dir, stem + ".html")
        write_table_page(path, f"{self.title}: epoch {epoch}, iteration {iteration}", rows,
                         columns, row_titles, image_stem=stem, back_link="index.html",
                         subtitle=self.row_note)
        self.write_index()
        return path

    def pages(self) -> list[tuple[int, int, int, str]]:
        """(epoch, iteration, revision, file name) of every page on disk, newest first."""
        found = []
        if os.path.isdir(self.root_dir):
            for fname in os.listdir(self.root_dir):
                m = _PAGE_RE.match(fname)
                if m:
                    found.append((int(m[1]), int(m[2]), int(m[3] or 1), fname))
        return sorted(found, key=lambda p: (p[1], p[0], p[2]), reverse=True)

    def write_index(self) -> str:
        """Rebuild ``index.html`` (and the loss plot) from what is on disk; returns its path."""
        os.makedirs(self.root_dir, exist_ok=True)
        plot = os.path.join(self.root_dir, LOSS_PLOT)
        plot_note = self._update_loss_plot(plot) if self.losses_path else None
        doc = document(title=self.title)
        with doc.head:
            tags.meta(charset="utf-8")
            tags.style(_STYLE)
        with doc:
            if os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(self.root_dir)), "index.html")):
                tags.p(tags.a("\u2190 the run", href="../index.html"))
            tags.h2(self.title)
            if self.intro:
                tags.p(self.intro)
            if self.losses_path and plot_note is None:
                with open(plot, "rb") as f:
                    version = f"{zlib.crc32(f.read()):08x}"  # a new URL when the plot changes
                tags.img(src=f"{LOSS_PLOT}?v={version}", alt="curves", cls="losses")
            elif plot_note:
                tags.p(plot_note, cls="note")
            pages = self.pages()
            tags.p(f"{len(pages)} result pages, newest first")
            with tags.ul(cls="pages"):
                for epoch, iteration, rev, fname in pages:
                    label = f"epoch {epoch}, iteration {iteration}"
                    tags.li(tags.a(label + (f" (#{rev})" if rev > 1 else ""), href=fname))
        path = os.path.join(self.root_dir, "index.html")
        atomic_write_text(path, doc.render())
        return path

    def _update_loss_plot(self, plot: str) -> str | None:
        """Redraw the plot if the log changed since; returns why there is no plot, or None."""
        try:
            if not os.path.isfile(self.losses_path):
                return "nothing logged yet"
            if (os.path.isfile(plot)
                    and os.stat(plot).st_mtime_ns > os.stat(self.losses_path).st_mtime_ns):
                return None
            drawn = render_loss_plot(self.losses_path, plot, self.title, panels=self.panels,
                                     key=self.record_key)
            return None if drawn else "nothing logged yet"
        except (OSError, ValueError) as e:
            return f"loss plot not drawn: {e}"
