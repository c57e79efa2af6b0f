"""save_visual.py and main_test_diff_passwds.py on the checkpoint of a tiny smoke run.

What is checked: the folders and pages they write (one strip per image, one column per password),
that every image on a page exists, that the pictures are exactly what the generator gives for the
passwords used, that results do not depend on the batch, that nothing is ever overwritten, that
passwords never reach file names or files, and that bad input is a one-line error.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
import main_test_diff_passwds
import save_visual
import training.trainer
from models.passwords import Password, complement, password_from_text
from results import inference_pages as ip
from tests.browser import Chromium, artifact_path, require_chromium, serve_directory
from tests.file_helpers import tree_digest
from tests.views_helpers import ROOT, TEST_SPLIT_SIZE, local_file, parse_page, tiny_config
from training.checkpoint import InferenceModel, load_checkpoint, save_checkpoint
from training.heldout import ViewPasswords, views
from utils.images import to_uint8

pytestmark = pytest.mark.usefixtures("one_thread")

STRIP_W = 5 * 64 + 4 * ip.STRIP_GAP


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run of 10 iterations: enough for G's inference statistics to let passwords make a
    visible difference (after 2 they still give nearly the same grey image for every password)."""
    base = tmp_path_factory.mktemp("scripts")
    cfg = tiny_config(str(base / "data"), str(base / "ck"), max_iters=10, html_freq=1000, print_freq=5)
    training.trainer.train(cfg)
    run_dir = base / "ck" / "smoke"
    return SimpleNamespace(dir=str(run_dir), config=str(run_dir / "config.yaml"), cfg=cfg,
                           ckpt=str(run_dir / "checkpoint_latest.pth.tar"), base=base)


def cli(script: str, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return proc, time.perf_counter() - t0


def all_text(folder: str) -> str:
    """Every file name and the content of every text file under ``folder``."""
    parts = []
    for dirpath, _, files in os.walk(folder):
        for f in files:
            parts.append(f)
            if f.endswith((".html", ".json", ".txt")):
                with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
                    parts.append(fh.read())
    return "\n".join(parts)


def png(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def check_strip_page(out: str, count: int, pages: int = 1) -> list[str]:
    """index.html (a table, or links to ``pages`` tables): a header of STRIP_COLUMNS and ``count`` rows
    in all of five existing images; strips/ holds the strip of each row. Returns the row titles (the
    images' paths)."""
    index = os.path.join(out, "index.html")
    tables = [index]
    if pages > 1:
        links = parse_page(index).links
        assert links == [f"page_{k:04d}.html" for k in range(1, pages + 1)]
        tables = [os.path.join(out, name) for name in links]
    titles = []
    for page in tables:
        p = parse_page(page)
        assert p.header == [""] + list(ip.STRIP_COLUMNS)
        rows = p.rows[1:]
        assert all(len(r) == 6 and all(c["img"] for c in r[1:]) for r in rows)
        missing = [s for s in p.imgs if not os.path.isfile(local_file(page, s))]
        assert not missing, missing
        titles += [r[0]["text"] for r in rows]
        first = [png(local_file(page, c["img"])) for c in rows[0][1:]]
        # the row's five images side by side are one of the strips
        assert any(np.array_equal(png(os.path.join(out, "strips", f)), ip.strip_png(first))
                   for f in os.listdir(os.path.join(out, "strips")))
    assert len(titles) == count
    strips = sorted(os.listdir(os.path.join(out, "strips")))
    assert len(strips) == count
    for name in strips:
        assert png(os.path.join(out, "strips", name)).shape == (64, STRIP_W, 3)
    return titles


def strip_indices(out: str) -> list[int]:
    """The split indices of the strips under ``out`` (their file names)."""
    return [int(f[:-4]) for f in sorted(os.listdir(os.path.join(out, "strips")))]


def assert_strips_are_views(out: str, run, model: InferenceModel, p, p2, w) -> torch.Tensor:
    """Every strip under ``out`` equals the training pages' views() of the same image and codes:
    real, anonymized (p), second anonymization (p2), wrong recovery (w), recovered (~p).
    Returns the images."""
    indices = strip_indices(out)
    test_set = datasets.build_dataset(run.cfg, "test")
    x = torch.stack([test_set[i]["image"] for i in indices])
    v = views(model.G, x, ViewPasswords(p, p2, w, w), model.mode)
    cols = [to_uint8(v[k]) for k in ("real", "anonymized", "second anonymization", "wrong recovery 1", "recovered")]
    for r, i in enumerate(indices):
        assert np.array_equal(png(os.path.join(out, "strips", f"{i:07d}.png")), ip.strip_png([c[r] for c in cols]))
    return x


# ---- save_visual.py ------------------------------------------------------------------------------

def test_save_visual_writes_one_strip_per_image_of_a_random_batch_and_never_overwrites(run):
    out_root = str(run.base / "qr1")
    proc, seconds = cli("save_visual.py", run.config, "--ckpt_name", "checkpoint_latest.pth.tar",
                        "--dataset", "synthetic", "--out", out_root, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    print(f"save_visual.py on the smoke checkpoint: {seconds:.1f} s")
    assert seconds < 60
    out = os.path.join(out_root, "smoke_checkpoint_latest_synthetic")
    assert f"wrote {out}/index.html" in proc.stdout
    titles = check_strip_page(out, count=4)  # the run's batch per process
    test_paths = set(datasets.build_dataset(run.cfg, "test").paths)
    assert len(set(titles)) == 4 and set(titles) <= test_paths
    with open(os.path.join(out, "info.json"), encoding="utf-8") as f:
        info = json.load(f)
    assert (info["images"], info["seed"], info["dataset"], info["full_split"]) == (4, 0, "synthetic", False)

    before = tree_digest(out)
    assert save_visual.main([run.config, "--ckpt_name", "checkpoint_latest.pth.tar", "--out", out_root,
                             "--device", "cpu", "--seed", "1"]) == 0
    assert sorted(os.listdir(out_root)) == ["smoke_checkpoint_latest_synthetic", "smoke_checkpoint_latest_synthetic_2"]
    assert tree_digest(out) == before
    other = check_strip_page(out + "_2", count=4)
    assert other != titles  # another seed, another random batch


def test_default_output_is_the_projects_qualitative_results_folder(run, monkeypatch, tmp_path):
    monkeypatch.setattr(ip, "PROJECT_ROOT", str(tmp_path))
    assert save_visual.main([run.config, "--ckpt_name", "checkpoint_latest.pth.tar", "--device", "cpu",
                             "--batch_size", "2"]) == 0
    check_strip_page(str(tmp_path / "qualitative_results" / "smoke_checkpoint_latest_synthetic"), count=2)


def test_the_default_batch_is_the_runs_batch_per_gpu(run, tmp_path):
    cfg = tiny_config(str(tmp_path), str(tmp_path), batch_size=48)
    assert ip.per_process_batch(str(tmp_path), cfg) == 48  # no log: the config's batch
    (tmp_path / "log.txt").write_text("[2026-01-01 00:00:00] device: cuda, processes: 4, batch 12 per process, "
                                      "amp: bf16, channels_last: True\n")
    assert ip.per_process_batch(str(tmp_path), cfg) == 12
    with open(os.path.join(run.dir, "log.txt"), encoding="utf-8") as f:  # the line training writes
        assert "processes: 1, batch 4 per process" in f.read()


def test_inference_full_covers_a_partial_last_batch_and_results_do_not_depend_on_the_batch(run, monkeypatch):
    outs = {}
    for batch, per_page, pages in (("5", 100, 1), ("4", 5, 3)):  # 12 test images: 5 + 5 + 2, and 4 + 4 + 4
        monkeypatch.setattr(ip, "ROWS_PER_PAGE", per_page)
        root = str(run.base / f"full{batch}")
        assert save_visual.main([run.config, "--ckpt_name", "checkpoint_latest.pth.tar", "--inference_full",
                                 "--batch_size", batch, "--out", root, "--device", "cpu"]) == 0
        outs[batch] = os.path.join(root, "smoke_checkpoint_latest_synthetic")
        titles = check_strip_page(outs[batch], count=TEST_SPLIT_SIZE, pages=pages)
        assert sorted(titles) == sorted(datasets.build_dataset(run.cfg, "test").paths)
        assert strip_indices(outs[batch]) == list(range(TEST_SPLIT_SIZE))
    assert tree_digest(os.path.join(outs["5"], "strips")) == tree_digest(os.path.join(outs["4"], "strips"))


def test_strips_are_what_the_generator_gives_for_the_users_password(run, monkeypatch):
    phrase = "violet tractor 1887"
    monkeypatch.setenv("FIT_TEST_PASSWORD", phrase)
    root = str(run.base / "user")
    assert save_visual.main([run.config, "--ckpt_name", "checkpoint_latest.pth.tar", "--password-env",
                             "FIT_TEST_PASSWORD", "--seed", "7", "--out", root, "--device", "cpu"]) == 0
    out = os.path.join(root, "smoke_checkpoint_latest_synthetic")
    assert phrase not in all_text(out) and "FIT_TEST_PASSWORD" not in all_text(out)

    model = InferenceModel(run.ckpt)
    user = Password.from_passphrase(phrase, 16)
    indices = strip_indices(out)
    p, p2, w = ip.strip_passwords(indices, 16, 7, user)
    assert torch.equal(p, user.bits(len(indices)))
    assert not (p2 == p).all(1).any() and not (w == complement(p)).all(1).any()
    x = assert_strips_are_views(out, run, model, p, p2, w)
    # the user's password decides the anonymization: a random one gives other faces
    other = ip.strip_passwords(indices, 16, 7)[0]
    shown = np.stack([png(os.path.join(out, "strips", f"{i:07d}.png"))[:, 64 + ip.STRIP_GAP:128 + ip.STRIP_GAP]
                      for i in indices])
    assert not np.array_equal(to_uint8(views(model.G, x, ViewPasswords(other, p2, w, w), model.mode)["anonymized"]),
                              shown)


def test_a_checkpoint_in_the_authors_format_takes_its_generator_settings_from_the_config(run):
    """The authors' files hold only epoch, iter, networks and optimizers: no config. The smoke
    generator (unet_64, ngf 8) is not the paper's (resnet_9blocks, ngf 64), so only the config
    passed makes it loadable."""
    ckpt = load_checkpoint(run.ckpt)
    orig_dir = run.base / "authors_run"
    orig_dir.mkdir()
    path = str(orig_dir / "checkpoint_0000.pth.tar")
    kept = {k: ckpt[k] for k in ckpt if k.startswith(("state_dict_", "optimizer_"))}
    save_checkpoint({"epoch": 0, "iter": 2, **kept}, path)
    root = str(run.base / "fmt_authors")
    assert save_visual.main([run.config, "--ckpt_name", path, "--out", root, "--device", "cpu", "--seed", "5"]) == 0
    out = os.path.join(root, "authors_run_checkpoint_0000_synthetic")
    with open(os.path.join(out, "info.json"), encoding="utf-8") as f:
        assert json.load(f)["original_format"] is True
    model = InferenceModel(path, overrides={k: run.cfg[k] for k in ("which_model_netG", "ngf", "img_size")})
    assert model.original_format
    assert_strips_are_views(out, run, model, *ip.strip_passwords(strip_indices(out), 16, 5))


# ---- main_test_diff_passwds.py -------------------------------------------------------------------

def diff_grid(page: str):
    p = parse_page(page)
    assert p.header == [""] + [f"password {j}" for j in range(1, 11)]
    rows = p.rows[1:]
    missing = [s for s in p.imgs if not os.path.isfile(local_file(page, s))]
    assert not missing, missing
    return [(r[0]["text"], [png(local_file(page, c["img"])) for c in r[1:]]) for r in rows]


def assert_diff_grid_is_views(grid, run, P, W) -> None:
    """Column j shows the training pages' views() of each image with anonymizing code P[j] and wrong
    code W[j]: anonymized, recovered (~P[j]), wrong recovery."""
    model = InferenceModel(run.ckpt)
    test_set = datasets.build_dataset(run.cfg, "test")
    by_path = {pth: i for i, pth in enumerate(test_set.paths)}
    starts = range(0, len(grid), 4)
    x = torch.stack([test_set[by_path[grid[k][0].split(": ")[0]]]["image"] for k in starts])
    for j in range(len(P)):
        p, w = P[j:j + 1].expand(len(x), -1), W[j:j + 1].expand(len(x), -1)
        v = views(model.G, x, ViewPasswords(p, p, w, w), model.mode)
        for row, key in ((1, "anonymized"), (2, "recovered"), (3, "wrong recovery 1")):
            shown = np.stack([grid[k + row][1][j] for k in starts])
            assert np.array_equal(shown, to_uint8(v[key])), (j, key)


def test_diff_passwords_shows_one_column_per_password_and_never_overwrites(run):
    proc, seconds = cli("main_test_diff_passwds.py", run.config, "--resume", run.ckpt, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    print(f"main_test_diff_passwds.py on the smoke checkpoint: {seconds:.1f} s")
    assert seconds < 60
    top = os.path.join(run.dir, "test_checkpoint_latest")
    page = os.path.join(top, "test_web", "index.html")
    assert f"wrote {os.path.dirname(page)}/index.html" in proc.stdout
    grid = diff_grid(page)
    assert len(grid) == 4 * 4  # 4 images (the run's batch) x real, anonymized, recovered, wrong recovery
    for k in range(0, len(grid), 4):
        image = grid[k][0].split(": ")[0]
        assert [t for t, _ in grid[k:k + 4]] == [f"{image}: {w}" for w in ip.DIFF_ROWS]
        real, anon = grid[k][1], grid[k + 1][1]
        assert all(np.array_equal(real[0], im) for im in real)  # the same input in every column
        assert len({im.tobytes() for im in anon}) == 10  # ten passwords, ten different faces
    P, W = ip.column_passwords(16, 0)  # the seed's ten codes: distinct, wrong codes != inverses
    assert len({tuple(r) for r in P.tolist()}) == 10 and not (W == complement(P)).all(1).any()
    assert_diff_grid_is_views(grid, run, P, W)

    before = tree_digest(top)
    assert main_test_diff_passwds.main([run.config, "--resume", run.ckpt, "--device", "cpu"]) == 0
    assert os.path.isfile(os.path.join(run.dir, "test_checkpoint_latest_2", "test_web", "index.html"))
    assert tree_digest(top) == before


def test_diff_passwords_from_a_file_are_applied_column_by_column(run, tmp_path, capsys):
    lines = [f"passphrase number {j}" for j in range(9)] + ["code:0x1f2e"]
    pw_file = tmp_path / "passwords.txt"
    pw_file.write_text("\n".join(lines) + "\n")
    assert main_test_diff_passwds.main([run.config, "--resume", run.ckpt, "--device", "cpu", "--password-file",
                                        str(pw_file), "--batch_size", "2", "--seed", "3"]) == 0
    stdout = capsys.readouterr().out
    page = stdout.split("wrote ")[1].strip()
    top = os.path.dirname(os.path.dirname(page))
    assert os.path.dirname(top) == run.dir and os.path.basename(top).startswith("test_checkpoint_latest")
    text = all_text(top) + stdout
    assert not any(line in text for line in lines) and "0x1f2e" not in text
    grid = diff_grid(page)
    assert len(grid) == 2 * 4
    P, W = ip.column_passwords(16, 3, [password_from_text(line, 16) for line in lines])
    assert_diff_grid_is_views(grid, run, P, W)


# ---- bad input -------------------------------------------------------------------------------------

def test_bad_input_is_a_one_line_error_and_writes_nothing(run, tmp_path, monkeypatch, capsys):
    out_root = str(tmp_path / "out")
    run_folder = sorted(os.listdir(run.dir))
    base = [run.config, "--ckpt_name", "checkpoint_latest.pth.tar", "--out", out_root, "--device", "cpu"]

    def error(main, argv) -> str:
        assert main(argv) == 2
        return capsys.readouterr().err

    original_style = tmp_path / "original.yaml"
    original_style.write_text(open(run.config).read() + "lambda_recon_L1: 100\n")
    err = error(save_visual.main, [str(original_style), "--ckpt_name", run.ckpt] + base[3:])
    assert "unknown config key 'lambda_recon_L1'" in err and "config/main.yaml" in err
    err = error(save_visual.main, [run.config, "--ckpt_name", "checkpoint_9999.pth.tar", "--out", out_root])
    assert "checkpoint 'checkpoint_9999.pth.tar' not found, neither as a path nor in" in err
    assert "checkpoints there: checkpoint_e" in err and "checkpoint_latest.pth.tar" in err
    monkeypatch.delenv("FIT_UNSET_PASSWORD", raising=False)
    err = error(save_visual.main, base + ["--password-env", "FIT_UNSET_PASSWORD"])
    assert "FIT_UNSET_PASSWORD is not set" in err
    assert "--batch_size must be positive, got 0" in error(save_visual.main, base + ["--batch_size", "0"])
    err = error(save_visual.main, base + ["--password-prompt"])  # pytest's stdin is no terminal
    assert "no terminal to prompt on" in err
    wider = tmp_path / "wider.yaml"
    wider.write_text(open(run.config).read().replace("ngf: 8", "ngf: 16"))
    assert "ngf: 8" in open(run.config).read()
    err = error(save_visual.main, [str(wider), "--ckpt_name", run.ckpt] + base[3:])
    assert "trained with ngf: 8, but the config says 16" in err
    if not torch.cuda.is_available():
        err = error(save_visual.main, base[:-1] + ["cuda"])
        assert "CUDA is not available" in err
    nine = tmp_path / "nine.txt"
    nine.write_text("".join(f"p{j}\n" for j in range(9)))
    err = error(main_test_diff_passwds.main, [run.config, "--resume", run.ckpt, "--password-file", str(nine)])
    assert f"{nine}: 9 lines; expected 10" in err
    same = tmp_path / "same.txt"
    same.write_text("".join(f"p{j}\n" for j in range(9)) + "p4\n")
    err = error(main_test_diff_passwds.main, [run.config, "--resume", run.ckpt, "--password-file", str(same)])
    assert f"{same}, line 10: same password as line 5" in err
    assert not os.path.exists(out_root) and sorted(os.listdir(run.dir)) == run_folder


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_strips_of_the_cpu(run):
    outs = []
    for device in ("cpu", "cuda"):
        root = str(run.base / f"dev_{device}")
        assert save_visual.main([run.config, "--ckpt_name", "checkpoint_latest.pth.tar", "--out", root,
                                 "--device", device, "--inference_full"]) == 0
        outs.append(os.path.join(root, "smoke_checkpoint_latest_synthetic", "strips"))
    for name in os.listdir(outs[0]):
        a, b = (png(os.path.join(o, name)).astype(int) for o in outs)
        assert np.abs(a - b).mean() < 1.0 and np.abs(a - b).max() <= 16, name
    assert main_test_diff_passwds.main([run.config, "--resume", run.ckpt, "--device", "cuda"]) == 0


@pytest.mark.browser
def test_chromium_shows_every_image_of_both_scripts_pages(run, monkeypatch):
    require_chromium()
    monkeypatch.setattr(ip, "ROWS_PER_PAGE", 8)
    root = str(run.base / "browser")
    assert save_visual.main([run.config, "--ckpt_name", "checkpoint_latest.pth.tar", "--inference_full",
                             "--out", root, "--device", "cpu"]) == 0
    assert main_test_diff_passwds.main([run.config, "--resume", run.ckpt, "--device", "cpu"]) == 0
    diff_page = sorted(d for d in os.listdir(run.dir) if d.startswith("test_checkpoint_latest"))[-1]
    with serve_directory(str(run.base)) as base, Chromium() as browser:
        visual = f"{base}browser/smoke_checkpoint_latest_synthetic/"
        assert browser.open(visual + "index.html") == 200
        assert browser.links() == ["page_0001.html", "page_0002.html"]
        for name, rows in (("page_0001.html", 8), ("page_0002.html", 4)):
            assert browser.open(visual + name) == 200
            imgs = browser.images()
            assert len(imgs) == 5 * rows and all(i["naturalWidth"] == 64 for i in imgs), imgs
        browser.screenshot(artifact_path("save_visual_page.png"))
        assert browser.open(f"{base}ck/smoke/{diff_page}/test_web/index.html") == 200
        imgs = browser.images()
        assert len(imgs) == 10 * 4 * 4 and all(i["naturalWidth"] == 64 for i in imgs)
        browser.screenshot(artifact_path("diff_passwords_page.png"))
