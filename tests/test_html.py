"""Result pages (results/html.py) and the loss plot (results/loss_plot.py), checked on disk."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from results.html import LOSS_PLOT, TRAINING_COLUMNS, ResultsSite, write_static_page, write_table_page
from results.loss_plot import curves, read_losses, render_loss_plot
from tests.demo_run import PAGES, ROWS, demo_batch, make_demo_run, write_losses
from tests.views_helpers import local_file, parse_page

IMAGE_NAME = re.compile(r"^(e\d{4}_i\d{8}(_\d+)?|[A-Za-z0-9_.-]+)_r\d{4}_c\d{2}\.png$")


def test_every_image_exists_index_links_every_page_and_plot_exists(tmp_path):
    run = make_demo_run(str(tmp_path / "run"))
    for key, site in (("web", run["web"]), ("test_web", run["test_web"])):
        index = os.path.join(site.root_dir, "index.html")
        idx = parse_page(index)
        pages = [p[3] for p in site.pages()]
        assert sorted(pages) == sorted(os.path.basename(p) for p in run["pages"][key])
        assert idx.links == pages  # every page, newest first, nothing else
        plot = os.path.join(site.root_dir, LOSS_PLOT)
        assert [local_file(index, s) for s in idx.imgs] == [plot]
        with Image.open(plot) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 150
        for page in run["pages"][key]:
            r = parse_page(page)
            assert len(r.imgs) == ROWS * len(TRAINING_COLUMNS)
            for src in r.imgs:
                assert os.path.isfile(local_file(page, src)), src
                assert IMAGE_NAME.match(os.path.basename(src)), src
            assert "index.html" in r.links
    newest_first = [p[1] for p in run["web"].pages()]
    assert newest_first == sorted((it for _, it in PAGES), reverse=True)


def test_images_are_saved_exactly_under_neutral_names(tmp_path):
    site = ResultsSite(str(tmp_path / "web"), "training")
    batch = demo_batch(3)
    columns = ["real", "anonymized with hunter2-password", "recovered"]
    rows = [[batch["real"][r], batch["anonymized"][r], batch["recovered"][r]] for r in range(ROWS)]
    page = site.add_page(4, 1234, rows, columns)
    assert os.path.basename(page) == "e0004_i00001234.html"
    r = parse_page(page)
    for k, src in enumerate(r.imgs):
        row, col = divmod(k, len(columns))
        assert os.path.basename(src) == f"e0004_i00001234_r{row:04d}_c{col:02d}.png"
        with Image.open(local_file(page, src)) as im:
            np.testing.assert_array_equal(np.asarray(im), rows[row][col])
    names = os.listdir(tmp_path / "web") + os.listdir(tmp_path / "web" / "images")
    assert not any("hunter2" in n for n in names)  # titles never reach file names


def test_a_second_page_for_the_same_iteration_keeps_the_first(tmp_path):
    site = ResultsSite(str(tmp_path / "web"), "training")
    first = site.add_page(1, 100, demo_batch(0))
    first_refs = parse_page(first).imgs
    before = {s: open(local_file(first, s), "rb").read() for s in first_refs}
    second = site.add_page(1, 100, demo_batch(1))  # e.g. after a resume from an earlier checkpoint
    assert os.path.basename(second) == "e0001_i00000100_2.html"
    assert {s: open(local_file(first, s), "rb").read() for s in first_refs} == before
    assert parse_page(first).imgs == first_refs
    assert set(parse_page(second).imgs).isdisjoint(first_refs)
    assert parse_page(os.path.join(site.root_dir, "index.html")).links == [
        "e0001_i00000100_2.html", "e0001_i00000100.html"]


def test_index_rebuild_is_idempotent_and_follows_the_log(tmp_path):
    run = make_demo_run(str(tmp_path / "run"))
    site = run["web"]
    index = os.path.join(site.root_dir, "index.html")
    once = open(index, "rb").read()
    site.write_index()
    site.write_index()
    assert open(index, "rb").read() == once
    plot_src = parse_page(index).imgs[0]
    with open(run["losses"], "a", encoding="utf-8") as f:  # the run goes on
        f.write('me": 9.0, "losses": {"G_GAN": 4.0}}\n' + json.dumps(  # the partial line ends
            {"epoch": 3, "iter": 1000, "time": 1.0, "losses": {"G_GAN": 5.0}}) + "\n")
    os.utime(run["losses"], ns=(os.stat(index).st_mtime_ns + 10**9,) * 2)
    site.write_index()
    assert parse_page(index).imgs[0] != plot_src  # a new plot under a new URL
    assert [r["iter"] for r in read_losses(run["losses"])][-2:] == [999, 1000]


def test_mapping_and_rows_give_the_same_page(tmp_path):
    batch = demo_batch(5)
    rows = [[batch[c][r] for c in TRAINING_COLUMNS] for r in range(ROWS)]
    a = ResultsSite(str(tmp_path / "a"), "t").add_page(1, 7, batch)
    b = ResultsSite(str(tmp_path / "b"), "t").add_page(1, 7, rows, list(TRAINING_COLUMNS))
    assert open(a, "rb").read() == open(b, "rb").read()


def test_static_page_reuses_the_builder_and_never_overwrites(tmp_path):
    out = str(tmp_path / "qualitative")
    batch = demo_batch(6)
    strips = ({c: batch[c][r] for c in ("real", "anonymized", "recovered")} for r in range(ROWS))
    rows = ([s[c] for c in s] for s in strips)  # a generator: pages of any length
    titles = [f"image {r}" for r in range(ROWS)]
    p1 = write_static_page(out, "test_batch", "LFW", rows, ["real", "anonymized", "recovered"],
                           row_titles=titles)
    p2 = write_static_page(out, "test_batch", "LFW", batch)
    assert [os.path.basename(p) for p in (p1, p2)] == ["test_batch.html", "test_batch_2.html"]
    r1, r2 = parse_page(p1), parse_page(p2)
    assert len(r1.imgs) == ROWS * 3 and len(r2.imgs) == ROWS * len(TRAINING_COLUMNS)
    assert set(r1.imgs).isdisjoint(r2.imgs)
    assert all(os.path.isfile(local_file(p1, s)) for s in r1.imgs + r2.imgs)
    html = open(p1, encoding="utf-8").read()
    assert all(t in html for t in titles)


def test_bad_input_names_the_cell(tmp_path):
    page = str(tmp_path / "p.html")
    ok = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"row 1, column 'b'.*uint8 HxWx3"):
        write_table_page(page, "t", [[ok, ok], [ok, ok.astype(np.float32)]], ["a", "b"])
    with pytest.raises(ValueError, match="row 0 has 1 images for 2 columns"):
        write_table_page(page, "t", [[ok]], ["a", "b"])
    with pytest.raises(ValueError, match="different numbers of images"):
        ResultsSite(str(tmp_path / "w"), "t").add_page(0, 0, {"a": ok[None],
                                                              "b": np.stack([ok, ok])})
    assert not os.path.exists(page)  # nothing half-written
    page = str(tmp_path / "q.html")
    write_table_page(page, "t", [[ok, ok]], ["a", "b"])
    with pytest.raises(FileExistsError, match="never replaced"):
        write_table_page(page, "t", [[ok, ok]], ["a", "b"])


# ---- loss plot -------------------------------------------------------------------------------

def test_loss_log_tolerates_a_partial_last_line_and_follows_a_resume(tmp_path):
    path = str(tmp_path / "losses.jsonl")
    lines = [{"epoch": 1, "iter": i, "time": 0.0, "losses": {"a": float(i)}} for i in (10, 20, 30)]
    lines += [{"epoch": 1, "iter": 20, "time": 0.0, "losses": {"a": -20.0, "b": float("nan")}}]
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in lines)
        f.write('{"epoch": 1, "iter": 30, "ti')
    recs = read_losses(path)
    assert [r["iter"] for r in recs] == [10, 20]  # the resume from iteration 20 replaced 20 and 30
    c = curves(recs)
    assert c["a"] == ([10, 20], [10.0, -20.0])
    assert c["b"][0] == [20] and np.isnan(c["b"][1][0])
    assert render_loss_plot(path, str(tmp_path / "l.png"))
    assert not render_loss_plot(str(tmp_path / "missing.jsonl"), str(tmp_path / "m.png"))
    assert not os.path.exists(tmp_path / "m.png")


def test_malformed_loss_line_is_named_and_the_index_still_builds(tmp_path):
    path = str(tmp_path / "losses.jsonl")
    write_losses(path, records=3, partial_tail=False)
    with open(path, "a") as f:
        f.write("not json\n")
        f.write(json.dumps({"epoch": 1, "iter": 99, "losses": {"a": 1.0}}) + "\n")
    with pytest.raises(ValueError, match=r"losses.jsonl, line 4: not valid JSON"):
        read_losses(path)
    site = ResultsSite(str(tmp_path / "web"), "training", losses_path=path)
    site.add_page(1, 1, demo_batch(0, rows=1))
    html = open(os.path.join(site.root_dir, "index.html"), encoding="utf-8").read()
    assert "line 4: not valid JSON" in html and not os.path.exists(site.root_dir + "/" + LOSS_PLOT)
