"""Qualitative results of a trained checkpoint on test images: the logic of save_visual.py and
main_test_diff_passwds.py (those scripts only parse arguments and call ``save_visual`` /
``diff_passwords``).

* save_visual: one strip per test image -- original, anonymized, second anonymization, wrong
  recovery, recovery -- for one seeded random batch of the test split, or with ``full`` for every
  image of it (a partial last batch included). Each image's random passwords depend only on the seed
  and the image's index in the split, so its strip is the same whatever the batch size or the mode.
* diff_passwords: the same test images under 10 passwords, one column per password, rows real,
  anonymized, recovered and wrong recovery.

The generator runs in inference mode (``G.eval()``: every image is normalised beside its
complement-password twin inside G), so an image's result never depends on its batch. Recovery always
applies the complement of the anonymizing password. Passwords are random (seeded) or the user's own
(read by models.passwords.read_passphrase: environment variable, file or prompt); they never reach
an output file, a title or a file name. Outputs never replace anything: every call writes a new
folder (``NAME``, ``NAME_2``, ...) holding ``index.html``, PNG images and ``info.json``.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from dominate import document, tags
from PIL import Image
from tqdm import tqdm

import datasets
from models.passwords import (
    Password,
    complement,
    draw_step_passwords,
    encode,
    password_from_text,
    random_bits,
    read_passphrase,
    redraw_equal,
)
from results.html import write_table_page
from training.checkpoint import PAPER_G, CheckpointError, InferenceModel, generator_config, load_checkpoint
from training.distributed import pick_device, use_bf16
from utils.config import Config, ConfigError, check_number, make_config
from utils.fileio import atomic_save_image, atomic_write_text, unwritable
from utils.images import to_uint8

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRIP_COLUMNS = ("original", "anonymized", "second anonymization", "wrong recovery", "recovery")
DIFF_ROWS = ("real", "anonymized", "recovered", "wrong recovery")
N_PASSWORDS = 10
ROWS_PER_PAGE = 100  # strips per HTML page of a full split
STRIP_GAP = 2        # white pixels between the images of a strip PNG
ORIGINAL_RUN_HINT = (
    "Configs written by the authors' original code use other key names. For a run of the original "
    "code, pass this project's config/main.yaml (or config/one_fourth_D_lr_half.yaml for runs of "
    "that config) instead, with --data_root, and give the checkpoint by its path "
    "(--ckpt_name /path/to/checkpoint.pth.tar, or --resume for main_test_diff_passwds.py).")
_LOG_BATCH = re.compile(r"processes: (\d+), batch (\d+) per process")


PasswordSource = Password | Callable[[int], Password]


class InferenceError(ValueError):
    """A problem with the scripts' inputs, named in the message."""


# ---- inputs: config, checkpoint, model, data ---------------------------------------------------

def load_config(path: str, data_root: str | None = None) -> Config:
    """The run's config (defaults < YAML < ``data_root``); unknown keys are errors that name them."""
    try:
        return make_config(path, **({"data_root": data_root} if data_root else {}))
    except ConfigError as e:
        if "unknown config key" in str(e):
            raise ConfigError(f"{e}\n{ORIGINAL_RUN_HINT}") from None
        raise


def find_checkpoint(config_path: str, name: str) -> str:
    """``name`` in the config's folder (the run folder), else ``name`` as a path; a name with a folder
    separator (``run/checkpoint.pth.tar``, ``./checkpoint.pth.tar``) is tried as a path first."""
    folder = os.path.dirname(os.path.abspath(config_path))
    candidates = [os.path.join(folder, name), name]
    if os.sep in name or (os.altsep and os.altsep in name):
        candidates.reverse()
    for path in candidates:
        if os.path.isfile(path):
            return path
    found = sorted(f for f in os.listdir(folder) if f.endswith((".pth.tar", ".pth")))
    raise CheckpointError(f"checkpoint '{name}' not found, neither as a path nor in {folder}; checkpoints "
                          f"there: {', '.join(found) if found else 'none'}")


def load_generator(cfg: Config, ckpt_path: str, device: torch.device) -> InferenceModel:
    """The checkpoint's generator. Ours carry their config, which must agree with ``cfg``; the
    authors' files carry none, so ``cfg`` supplies the generator settings (PAPER_G's keys)."""
    wanted = {k: cfg[k] for k in PAPER_G}
    ckpt = load_checkpoint(ckpt_path)  # (read twice: InferenceModel takes a path)
    if "config" not in ckpt:
        return InferenceModel(ckpt_path, device, overrides=wanted)
    own = generator_config(ckpt)
    differ = [k for k in wanted if own[k] != wanted[k]]
    if differ:
        k = differ[0]
        raise ConfigError(f"{ckpt_path} was trained with {k}: {own[k]!r}, but the config says "
                          f"{wanted[k]!r}; pass the run's own config.yaml")
    del ckpt
    return InferenceModel(ckpt_path, device)


def per_process_batch(run_dir: str, cfg: Config) -> int:
    """The batch one GPU saw in training (from the run's log.txt), else the config's batch_size."""
    try:
        with open(os.path.join(run_dir, "log.txt"), encoding="utf-8", errors="replace") as f:
            found = _LOG_BATCH.findall(f.read())
    except OSError:
        found = []
    return int(found[-1][1]) if found else cfg.batch_size


def load_test_split(cfg: Config, dataset: str | None) -> datasets.FaceDataset:
    ds = datasets.build_dataset(cfg, "test", dataset)
    if len(ds) == 0:
        raise datasets.DatasetError(f"{ds}: the test split is empty")
    if ds.img_size != cfg.img_size:
        raise InferenceError(f"{ds}: images of {ds.img_size} px for a generator of {cfg.img_size} px")
    return ds


def choose_images(n: int, count: int | None, seed: int) -> list[int]:
    """All ``n`` indices (count None), or ``count`` of them drawn at random (seeded), in order."""
    if count is None or count >= n:
        return list(range(n))
    return sorted(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count].tolist())


def batches(ds, indices: Sequence[int], batch_size: int, workers: int,
            device: torch.device) -> Iterator[dict]:
    subset = torch.utils.data.Subset(ds, list(indices))
    workers = workers if len(indices) > batch_size else 0  # one batch: worker start-up costs more
    return iter(datasets.make_loader(subset, batch_size, shuffle=False, drop_last=False, workers=workers,
                                     device_type=device.type))


# ---- passwords ----------------------------------------------------------------------------------

def image_generator(seed: int, index: int) -> torch.Generator:
    """The random generator of one image's passwords: depends only on (seed, index)."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def strip_passwords(indices: Sequence[int], length: int, seed: int, user: Password | None = None):
    """(p, p2, w) bits (B, L) for the images of split indices ``indices``: p anonymizes (the user's
    password if given), p2 != p a second anonymization, w != ~p a wrong recovery code. Each row
    depends only on (seed, index)."""
    rows = []
    for i in indices:
        g = image_generator(seed, int(i))
        s = draw_step_passwords(1, length, g)
        if user is None:
            rows.append((s.p, s.p2, s.w1))
        else:
            p = user.bits(1)
            rows.append((p, redraw_equal(s.p2, [p], g), redraw_equal(s.w1, [complement(p)], g)))
    return tuple(torch.cat(col) for col in zip(*rows))


def column_passwords(length: int, seed: int, given: Sequence[Password] | None = None):
    """N_PASSWORDS distinct passwords (bits, (N, L); random unless ``given``) and one wrong recovery
    code per password (!= its inverse)."""
    g = torch.Generator().manual_seed(seed)
    if given is not None:
        p = torch.cat([pw.bits(1) for pw in given])
    else:
        p = random_bits(1, length, g)
        while p.shape[0] < N_PASSWORDS:
            p = torch.cat([p, redraw_equal(random_bits(1, length, g), list(p[:, None]), g)])
    w = redraw_equal(random_bits(p.shape[0], length, g), [complement(p)], g)
    return p, w


def _resolve(source: PasswordSource | None, length: int) -> Password | None:
    pw = source(length) if callable(source) else source
    if pw is not None and pw.length != length:
        raise InferenceError(f"the password has {pw.length} bits; the checkpoint's generator takes "
                             f"{length}")
    return pw


def read_password_lines(path: str, length: int, count: int = N_PASSWORDS) -> list[Password]:
    """``count`` passwords, one per line (a passphrase or ``code:...``), all different."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise InferenceError(f"cannot read the password file {path}: {e.strerror}") from None
    except UnicodeDecodeError:  # its message would show bytes of a password
        raise InferenceError(f"the password file {path} is not UTF-8 text; save it as UTF-8") from None
    if len(lines) != count:
        raise InferenceError(f"{path}: {len(lines)} lines; expected {count}, one password per line")
    out = []
    for number, text in enumerate(lines, start=1):
        if not text:
            raise InferenceError(f"{path}, line {number}: empty password")
        try:
            pw = password_from_text(text, length)
        except ValueError as e:
            raise InferenceError(f"{path}, line {number}: {e}") from None
        if pw in out:
            raise InferenceError(f"{path}, line {number}: same password as line {out.index(pw) + 1}")
        out.append(pw)
    return out


# ---- generation ---------------------------------------------------------------------------------

class Runner:
    """G in inference mode on one device, with the run's autocast setting."""

    def __init__(self, model: InferenceModel, amp: bool):
        self.G, self.mode, self.device, self.amp = model.G, model.mode, model.device, amp

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        if bits.shape[0] != images.shape[0]:
            bits = bits.expand(images.shape[0], -1)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.G(images, encode(bits, self.mode).to(self.device)).float()


def strips(run: Runner, images: torch.Tensor, p, p2, w) -> list[list[np.ndarray]]:
    """One row per image: STRIP_COLUMNS as uint8 HxWx3."""
    x = images.to(run.device)
    M = run(x, p)
    cols = [x, M, run(x, p2), run(M, w), run(M, complement(p))]
    arrays = [to_uint8(c) for c in cols]
    return [[a[r] for a in arrays] for r in range(x.shape[0])]


def strip_png(row: Sequence[np.ndarray], gap: int = STRIP_GAP) -> np.ndarray:
    h = row[0].shape[0]
    spacer = np.full((h, gap, 3), 255, np.uint8)
    parts = [row[0]]
    for img in row[1:]:
        parts += [spacer, img]
    return np.concatenate(parts, axis=1)


# ---- outputs ------------------------------------------------------------------------------------

def new_folder(base: str) -> str:
    """Create and return ``base``, or ``base_2``, ``base_3``... : never an existing folder."""
    why = unwritable(os.path.dirname(os.path.abspath(base)))
    if why:
        raise InferenceError(f"cannot write {base}: {why}")
    os.makedirs(os.path.dirname(os.path.abspath(base)), exist_ok=True)
    path, k = base, 1
    while True:
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            k += 1
            path = f"{base}_{k}"


def safe_name(text: str) -> str:
    stem = text
    for ext in (".pth.tar", ".pth", ".pt", ".tar"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
            break
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem).strip("._") or "run"


def write_info(folder: str, info: dict) -> None:
    atomic_write_text(os.path.join(folder, "info.json"), json.dumps(info, indent=2) + "\n")


def _describe(model: InferenceModel, cfg: Config, ds, device, amp: bool, seed: int, user: str) -> dict:
    return {"checkpoint": os.path.abspath(model.path), "generator_sha256": model.fingerprint,
            "original_format": model.original_format, "dataset": ds.name, "split": "test",
            "data": ds.image_dir, "img_size": cfg.img_size, "use_minus_one": model.mode,
            "device": str(device), "amp": "bf16" if amp else "none", "seed": seed, "passwords": user,
            "created": time.strftime("%Y-%m-%d %H:%M:%S")}


@dataclass
class Setup:
    """What both scripts start from: the run's config, the generator, the test split, the batch."""
    cfg: Config
    ckpt: str
    run_dir: str
    model: InferenceModel
    runner: Runner
    dataset: datasets.FaceDataset
    device: torch.device
    batch: int


@dataclass(frozen=True)
class ScriptInputs:
    """What both scripts are asked to run: the run's config, the checkpoint (a file in the config's
    folder, or a path), the test data (None: the config's), the batch (None: the run's batch per
    process), the device and the seed of the image choice and the random passwords."""

    config_path: str
    ckpt_name: str
    dataset: str | None = None
    data_root: str | None = None
    batch_size: int | None = None
    device: str = "auto"
    seed: int = 0


def prepare(inputs: ScriptInputs) -> Setup:
    check_number(inputs.seed, "--seed", low=0, integer=True, error=InferenceError)
    cfg = load_config(inputs.config_path, inputs.data_root)
    ckpt = find_checkpoint(inputs.config_path, inputs.ckpt_name)
    try:
        dev = pick_device(inputs.device)
    except RuntimeError as e:
        raise InferenceError(str(e)) from None
    run_dir = os.path.dirname(os.path.abspath(ckpt))
    batch = per_process_batch(run_dir, cfg) if inputs.batch_size is None else inputs.batch_size
    if batch <= 0:
        raise InferenceError(f"--batch_size must be positive, got {batch}")
    model = load_generator(cfg, ckpt, dev)
    return Setup(cfg, ckpt, run_dir, model, Runner(model, use_bf16(cfg.amp, dev)),
                 load_test_split(cfg, inputs.dataset), dev, batch)


def save_visual(inputs: ScriptInputs, *, full: bool = False, password: PasswordSource | None = None,
                out_root: str | None = None, progress: bool = True) -> str:
    """Strips of test images (see the module doc); returns the output folder. ``password``: the
    user's Password, or a callable giving it for the generator's password length."""
    s = prepare(inputs)
    seed = inputs.seed
    password = _resolve(password, s.model.passwd_length)
    run_dir, ckpt, batch = s.run_dir, s.ckpt, s.batch
    indices = choose_images(len(s.dataset), None if full else batch, seed)
    name = "_".join(safe_name(n) for n in (os.path.basename(run_dir), os.path.basename(ckpt), s.dataset.name))
    out = new_folder(os.path.join(out_root or os.path.join(PROJECT_ROOT, "qualitative_results"), name))
    info = _describe(s.model, s.cfg, s.dataset, s.device, s.runner.amp, seed,
                     "given by the user" if password else "random, drawn per image from the seed")
    info.update(images=len(indices), full_split=bool(full), batch_size=batch, columns=list(STRIP_COLUMNS))
    write_info(out, info)

    L = s.model.passwd_length
    title = f"{os.path.basename(run_dir)} / {os.path.basename(ckpt)} on {s.dataset.name} (test split)"

    def rows(bar) -> Iterator[tuple[str, list[np.ndarray]]]:
        for b in batches(s.dataset, indices, batch, s.cfg.workers, s.device):
            split_index = b["index"].tolist()
            images = strips(s.runner, b["image"], *strip_passwords(split_index, L, seed, password))
            for path, row, i in zip(b["path"], images, split_index):
                atomic_save_image(Image.fromarray(strip_png(row)), os.path.join(out, "strips", f"{i:07d}.png"))
                yield path, row
            bar.update(len(split_index))

    with tqdm(total=len(indices), unit="img", desc="save_visual", disable=not progress) as bar:
        _write_pages(out, title, rows(bar), len(indices))
    return out


def _write_pages(out: str, title: str, rows: Iterator, total: int) -> None:
    """index.html holds the table when it fits one page; else pages of ROWS_PER_PAGE and an index."""
    pages = max(1, -(-total // ROWS_PER_PAGE))
    subtitle = (f"{total} test images, one strip each (the strips alone: strips/). Passwords are not shown: "
                "recovery uses the complement of the anonymizing password, the wrong recovery a random other "
                "code.")
    if pages == 1:
        chunk = list(rows)
        write_table_page(os.path.join(out, "index.html"), title, [r for _, r in chunk], STRIP_COLUMNS,
                         row_titles=[t for t, _ in chunk], image_stem="page_0001", subtitle=subtitle)
        return
    names = []
    for k in range(1, pages + 1):
        chunk = [r for _, r in zip(range(ROWS_PER_PAGE), rows)]
        name = f"page_{k:04d}"
        write_table_page(os.path.join(out, name + ".html"), f"{title}, page {k} of {pages}",
                         [r for _, r in chunk], STRIP_COLUMNS, row_titles=[t for t, _ in chunk],
                         image_stem=name, back_link="index.html")
        names.append(name + ".html")
    _write_index(out, title, subtitle, names, total)


def _write_index(out: str, title: str, subtitle: str, pages: list[str], total: int) -> None:
    doc = document(title=title)
    with doc.head:
        tags.meta(charset="utf-8")
    with doc:
        tags.h2(title)
        tags.p(subtitle)
        with tags.ul():
            for k, name in enumerate(pages, start=1):
                first, last = (k - 1) * ROWS_PER_PAGE + 1, min(k * ROWS_PER_PAGE, total)
                tags.li(tags.a(f"page {k}: images {first} to {last}", href=name))
    atomic_write_text(os.path.join(out, "index.html"), doc.render())


def diff_passwords(inputs: ScriptInputs, passwords: Sequence[Password] | str | None = None) -> str:
    """The same test images under N_PASSWORDS passwords (module doc); returns the test_web folder:
    ``<checkpoint folder>/test_<checkpoint stem>[_N]/test_web``. ``passwords``: Passwords, or the
    path of a file of N_PASSWORDS lines (read_password_lines), or None for random ones."""
    s = prepare(inputs)
    seed = inputs.seed
    if isinstance(passwords, str):
        passwords = read_password_lines(passwords, s.model.passwd_length)
    run_dir, ckpt, batch = s.run_dir, s.ckpt, s.batch
    L = s.model.passwd_length
    if passwords is not None and len(passwords) != N_PASSWORDS:
        raise InferenceError(f"{len(passwords)} passwords given; expected {N_PASSWORDS}")
    if passwords is not None and any(p.length != L for p in passwords):
        raise InferenceError(f"the passwords must have {L} bits, as the checkpoint's generator")
    P, W = column_passwords(L, seed, passwords)
    indices = choose_images(len(s.dataset), batch, seed)
    top = new_folder(os.path.join(run_dir, f"test_{safe_name(os.path.basename(ckpt))}"))
    out = os.path.join(top, "test_web")
    os.mkdir(out)

    grid: list[list[np.ndarray]] = []  # rows: image 0 real, anonymized, recovered, wrong; image 1 ...
    titles: list[str] = []
    for b in batches(s.dataset, indices, batch, 0, s.device):
        x = b["image"].to(s.device)
        per_col = []
        for j in range(P.shape[0]):
            M = s.runner(x, P[j:j + 1])
            per_col.append([to_uint8(t) for t in (x, M, s.runner(M, complement(P[j:j + 1])),
                                                  s.runner(M, W[j:j + 1]))])
        for r, path in enumerate(b["path"]):
            for k, what in enumerate(DIFF_ROWS):
                grid.append([col[k][r] for col in per_col])
                titles.append(f"{path}: {what}")
    columns = [f"password {j + 1}" for j in range(P.shape[0])]
    title = (f"{os.path.basename(run_dir)} / {os.path.basename(ckpt)}: {len(indices)} {s.dataset.name} "
             f"test images under {P.shape[0]} passwords")
    write_table_page(os.path.join(out, "index.html"), title, grid, columns, row_titles=titles, image_stem="diff",
                     subtitle="One column per password (passwords are not shown). Rows per image: real, "
                              "anonymized, recovered with the inverse password, recovered with a wrong password.")
    info = _describe(s.model, s.cfg, s.dataset, s.device, s.runner.amp, seed,
                     "given by the user" if passwords else "random, from the seed")
    info.update(images=len(indices), passwords_count=int(P.shape[0]), rows=list(DIFF_ROWS))
    write_info(top, info)
    return out


# ---- the scripts' shared command line -------------------------------------------------------------

def script_arguments(ap, own_password: bool) -> None:
    """Options both scripts take (the config and checkpoint arguments are theirs)."""
    ap.add_argument("--dataset", choices=datasets.DATASETS, default=None,
                    help="test data (default: the config's test_dataset, else its dataset); the test split")
    ap.add_argument("--data_root", default=None, help="folder of the datasets (default: the config's)")
    ap.add_argument("--batch_size", type=int, default=None,
                    help="images per batch (default: the run's batch per GPU, from its log.txt)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--seed", type=int, default=0, help="seed of the image choice and the random passwords")
    if own_password:
        g = ap.add_mutually_exclusive_group()
        g.add_argument("--password-env", metavar="VAR",
                       help="anonymize with the passphrase in this environment variable")
        g.add_argument("--password-file", metavar="FILE",
                       help="anonymize with the passphrase on this file's first line")
        g.add_argument("--password-prompt", action="store_true",
                       help="anonymize with a passphrase typed at a prompt")


def script_inputs(args, config_path: str, ckpt_name: str) -> ScriptInputs:
    """The ScriptInputs of parsed command-line options (those ``script_arguments`` adds)."""
    return ScriptInputs(config_path, ckpt_name, args.dataset, args.data_root, args.batch_size, args.device,
                        args.seed)


def user_password(args) -> Callable[[int], Password] | None:
    """The user's password as a callable of the password length, or None (random passwords).
    A passphrase, or an explicit code written ``code:0x1a2b``."""
    if not (args.password_env or args.password_file or args.password_prompt):
        return None

    def read(length: int) -> Password:
        try:
            return password_from_text(read_passphrase(env=args.password_env, file=args.password_file), length)
        except ValueError as e:  # names the variable or file, never the value
            raise InferenceError(str(e)) from None

    return read


def run_script(fn: Callable[[], None]) -> int:
    """Run a script's body; problems with its inputs are one line on stderr and exit status 2, a
    file that could not be written one line and status 1, Ctrl-C one line and status 130."""
    try:
        fn()
    except (ConfigError, CheckpointError, datasets.DatasetError, InferenceError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing more was written; a folder written so far may be incomplete", file=sys.stderr)
        return 130
    return 0
