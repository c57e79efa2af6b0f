"""The result pages as researchers see them: served by ``python -m http.server`` and opened in
headless Chromium. Screenshots go to test_artifacts/ (git-ignored)."""
from __future__ import annotations

import os

import pytest

from results.html import TRAINING_COLUMNS
from tests.browser import Chromium, artifact_path, require_chromium, serve_directory
from tests.demo_run import ROWS, make_demo_run


def assert_all_images_loaded(browser: Chromium, url: str, expected: int) -> None:
    imgs = browser.images()
    assert len(imgs) == expected, f"{url}: {len(imgs)} images, expected {expected}"
    broken = [i["src"] for i in imgs if i["naturalWidth"] <= 0 or i["naturalHeight"] <= 0]
    assert not broken, f"{url}: images that did not load: {broken}"


@pytest.mark.browser
def test_result_pages_load_completely_in_chromium(tmp_path):
    require_chromium()
    run_dir = str(tmp_path / "run")
    run = make_demo_run(run_dir)
    per_page = ROWS * len(TRAINING_COLUMNS)
    with serve_directory(run_dir) as base, Chromium() as browser:
        for site in ("web", "test_web"):
            index = f"{base}{site}/index.html"
            assert browser.open(index) == 200
            assert_all_images_loaded(browser, index, expected=1)  # the loss curves
            assert browser.horizontal_overflow() == 0, f"{index} scrolls sideways at 1280 px"
            links = browser.links()
            assert links == [p[3] for p in run[site].pages()]
            assert sorted(links) == sorted(os.path.basename(p) for p in run["pages"][site])
            if site == "web":
                browser.screenshot(artifact_path("results_index.png"))
            for link in links:
                page = f"{base}{site}/{link}"
                assert browser.open(page) == 200
                assert_all_images_loaded(browser, page, expected=per_page)
                assert "index.html" in browser.links()
                assert browser.horizontal_overflow() == 0, f"{page} scrolls sideways at 1280 px"
                shown = {(i["width"], i["height"]) for i in browser.images()}
                assert shown == {(144, 144)}, shown  # the 48 px images at 3x: at least 128 px
                legend = browser.evaluate("Array.from(document.querySelectorAll('dl.legend dt'), e => e.textContent)")
                assert legend == list(TRAINING_COLUMNS)
            browser.screenshot(artifact_path(f"results_page_{site}.png"))

        # the check above does see a missing image (the last page opened is test_web's)
        src = browser.images()[4]["src"]
        os.unlink(os.path.join(run_dir, "test_web", src))
        browser.open(f"{base}test_web/{links[0]}")
        assert [i["src"] for i in browser.images() if i["naturalWidth"] == 0] == [src]

    # serving the site folder itself works as well: every link is relative
    with serve_directory(os.path.join(run_dir, "web")) as base, Chromium() as browser:
        assert browser.open(base + "index.html") == 200
        assert_all_images_loaded(browser, base + "index.html", expected=1)
        newest = browser.links()[0]
        assert browser.open(base + newest) == 200
        assert_all_images_loaded(browser, base + newest, expected=per_page)
    assert os.path.getsize(artifact_path("results_index.png")) > 10_000
