"""Helpers of the tests of result views and inference scripts: the tiny smoke-run configuration (the
smoke config made smaller: 10 synthetic identities, 4 images each, batch 4, narrow networks, fp32,
so that a run of a few iterations takes seconds) and a parser of result pages."""
from __future__ import annotations

import os
from html.parser import HTMLParser
from urllib.parse import urlsplit

from utils.config import Config, make_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_SPLIT_SIZE = 12  # identities 4, 5, 6 of 0..9 (datasets/splits.py), 4 images each


def tiny_config(data_root: str, ckpt_dir: str, **kw) -> Config:
    base = dict(data_root=data_root, ckpt_dir=ckpt_dir, synthetic_identities=10, synthetic_images_per_id=4,
                batch_size=4, max_iters=3, workers=0, print_freq=1, html_freq=2, display_freq=1,
                time_limit_min=0.0, amp="none", channels_last=False, pool_size=3, ngf=8, ndf=8, eval_batches=1,
                display_id=0)
    base.update(kw)
    return make_config(os.path.join(ROOT, "config", "smoke.yaml"), **base)


class Page(HTMLParser):
    """A result page as a table: ``rows`` holds one list per <tr> of cells {"text", "img"} (th and
    td alike); ``imgs`` every <img> src, ``links`` every <a> href, in page order."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[dict]] = []
        self.imgs: list[str] = []
        self.links: list[str] = []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("th", "td") and self.rows:
            self._cell = {"text": "", "img": None}
            self.rows[-1].append(self._cell)
        elif tag == "img":
            self.imgs.append(a["src"])
            if self._cell is not None:
                self._cell["img"] = a["src"]
        elif tag == "a":
            self.links.append(a["href"])

    def handle_endtag(self, tag):
        if tag in ("th", "td"):
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    @property
    def header(self) -> list[str]:
        return [c["text"] for c in self.rows[0]] if self.rows else []


def parse_page(path: str) -> Page:
    p = Page()
    with open(path, encoding="utf-8") as f:
        p.feed(f.read())
    return p


def local_file(page: str, src: str) -> str:
    """The file a relative link of ``page`` names; fails on absolute links and on links that leave the
    page's folder (a result site must work wherever it is served from)."""
    parts = urlsplit(src)
    assert not parts.scheme and not parts.netloc and not parts.path.startswith("/"), src
    target = os.path.normpath(os.path.join(os.path.dirname(page), parts.path))
    assert target.startswith(os.path.dirname(page) + os.sep), f"{src} leaves the site folder"
    return target
