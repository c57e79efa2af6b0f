"""Configuration: one flat schema, YAML files, command-line overrides.

Every setting of the project is declared once in ``SCHEMA`` with its type, default and help. A run's
configuration is built in this order, later sources winning:

    schema defaults  <  YAML file  <  ``--key value`` flags on the command line

Unknown keys (in YAML or on the command line), values of the wrong type and numbers that are not
finite or out of their key's range (``LIMITS``) are errors that name the key and where it came from,
and for unknown keys the nearest valid one. ``check_number`` is the one check of a number's
finiteness and range: the scripts' numeric options and the numbers read from files use it too.
"""
from __future__ import annotations

import argparse
import difflib
import math
import numbers
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key (and the file) at fault."""


@dataclass(frozen=True)
class Option:
    default: Any
    type: type  # int, float, str or bool
    help: str
    choices: tuple | None = None
    nullable: bool = False  # None (YAML ``null``, command-line ``none``) allowed


def _o(default, typ, help, choices=None, nullable=False):
    return Option(default, typ, help, tuple(choices) if choices else None, nullable)


SCHEMA: dict[str, Option] = {
    # ---- run ---------------------------------------------------------------------------------
    "name": _o("main", str, "run name; the run folder is ckpt_dir/name"),
    "ckpt_dir": _o("checkpoints", str, "parent folder of run folders"),
    "resume": _o(None, str, "checkpoint to continue from", nullable=True),
    "seed": _o(0, int, "random seed"),
    "device": _o("auto", str, "auto, cpu, cuda or cuda:N"),
    "amp": _o("none", str, "mixed precision: none, bf16 autocast, or auto (bf16 on GPUs and on CPUs with "
                           "AMX or AVX-512 BF16, where it is fast; fp32 elsewhere)", choices=["none", "bf16", "auto"]),
    "channels_last": _o(True, bool, "use the channels_last memory format (faster convolutions)"),
    "epochs": _o(30, int, "training epochs"),
    "max_iters": _o(0, int, "stop after this many training iterations in total (0: no limit)"),
    "time_limit_min": _o(0.0, float, "stop cleanly after this many minutes of training (0: no limit)"),
    # ---- data --------------------------------------------------------------------------------
    "data_root": _o("data", str, "folder holding all datasets"),
    "dataset": _o("CASIA", str, "training data",
                  choices=["CASIA", "LFW", "LFW_CROP", "FFHQ", "folder", "synthetic"]),
    "test_dataset": _o(None, str, "dataset for validation/test pages (default: same as dataset)",
                       nullable=True, choices=["CASIA", "LFW", "LFW_CROP", "FFHQ", "folder", "synthetic"]),
    "folder_images": _o("images", str, "folder dataset: image folder, relative to data_root"),
    "folder_landmarks": _o("landmarks.txt", str, "folder dataset: landmark file in CASIA format"),
    "synthetic_dir": _o("synthetic_faces", str, "synthetic dataset folder, relative to data_root"),
    "synthetic_identities": _o(100, int, "identities drawn by the synthetic face generator"),
    "synthetic_images_per_id": _o(20, int, "images per synthetic identity"),
    "synthetic_seed": _o(0, int, "seed of the synthetic face generator"),
    "img_size": _o(128, int, "side of the square image the generator sees"),
    "batch_size": _o(48, int, "total batch over all GPUs (the paper: 12 per GPU x 4)"),
    "workers": _o(4, int, "data loader worker processes per GPU"),
    # ---- passwords ---------------------------------------------------------------------------
    "passwd_length": _o(16, int, "password bits L (a multiple of 4)"),
    "use_minus_one": _o("half", str, "bit encoding: half (+-0.5), one_fourth (+-0.25), true (+-1)",
                        choices=["half", "one_fourth", "true"]),
    # ---- networks ----------------------------------------------------------------------------
    "which_model_netG": _o("resnet_9blocks", str, "generator",
                           choices=["resnet_9blocks", "resnet_6blocks", "unet_128", "unet_64"]),
    "passwd_inject": _o("input", str, "where G reads the password: 'input' (the paper: tiled onto the image) or "
                                      "'every_level' (U-Net only: tiled onto every decoder level's input as well)",
                        choices=["input", "every_level"]),
    "ngf": _o(64, int, "generator width"),
    "norm": _o("batch", str, "normalisation of G, D and Q", choices=["batch", "instance"]),
    "use_resize_conv": _o(True, bool, "upsample by nearest resize + conv instead of transposed conv"),
    "use_dropout": _o(False, bool, "dropout in the generator"),
    "which_model_netD": _o("multiscale_separated", str, "discriminator", choices=["multiscale_separated"]),
    "ndf": _o(64, int, "discriminator and password-classifier width"),
    "n_layers_D": _o(3, int, "layers of each PatchGAN"),
    "gan_mode": _o("lsgan", str, "GAN objective", choices=["lsgan", "vanilla"]),
    "init_type": _o("normal", str, "weight initialisation", choices=["normal", "xavier", "kaiming", "orthogonal"]),
    "init_gain": _o(0.02, float, "scale of the initialisation"),
    "pool_size": _o(500, int, "image history pool size per kind (0: no pool)"),
    # ---- face recogniser ---------------------------------------------------------------------
    "fr_pretrained": _o("pretrained_models/sphere20a_20171020.pth", str,
                        "SphereFace-20a weights; empty string trains FR from scratch", nullable=True),
    "fr_pretrain_epochs": _o(0, int, "first train FR alone on the training identities for this many epochs (A-Softmax, "
                                     "aligned crops): the stand-in for the published SphereFace on data it was not "
                                     "trained for; 0: off"),
    "fr_pretrain_lr": _o(1e-3, float, "peak Adam learning rate of that pre-training (one-cycle schedule)"),
    "fr_width": _o(1.0, float, "SphereFace channel multiplier (1.0 is the published network)"),
    "fr_crop_height": _o(112, int, "height of the aligned face crop fed to FR"),
    "fr_crop_width": _o(96, int, "width of the aligned face crop fed to FR"),
    "fr_num_classes": _o(10574, int,
                         "classes of FR's A-Softmax layer (10574: CASIA-WebFace; 0: from the training labels)"),
    "angle_margin": _o(4, int, "A-Softmax margin m"),
    "angle_gamma": _o(0.0, float, "A-Softmax focusing parameter gamma"),
    "angle_lambda_min": _o(5.0, float, "A-Softmax lambda floor"),
    "angle_lambda_max": _o(1500.0, float, "A-Softmax lambda start"),
    "fr_anon_target": _o("away", str, "what the G phase's FR term asks of the anonymized and wrong-password faces: "
                                      "'away' (the paper: -CE_A against the true identity) or 'password_identity' "
                                      "(+CE_A toward the training identity that the password names, never the true "
                                      "one, so that two passwords give two people)",
                         choices=["away", "password_identity"]),
    "feature_loss": _o("cos", str, "feature loss on FR embeddings", choices=["cos", "l2"]),
    "feature_layer": _o(5, int, "FR layer of the feature loss (5: the fc5 embedding)", choices=[5]),
    "feature_fr": _o("trained", str, "FR whose fc5 embeddings the feature losses compare: 'trained' (the paper: the FR "
                                      "fine-tuned in the D phase) or 'frozen' (a fixed copy of FR as training began)",
                     choices=["trained", "frozen"]),
    # ---- optimisation ------------------------------------------------------------------------
    "lr": _o(1e-4, float, "base learning rate"),
    "G_lr": _o(None, float, "generator learning rate (default lr)", nullable=True),
    "Q_lr": _o(None, float, "password classifier learning rate (default lr)", nullable=True),
    "D_lr": _o(None, float, "discriminator learning rate (default lr)", nullable=True),
    "FR_lr": _o(None, float, "face recogniser learning rate (default lr/10; 0 freezes FR)", nullable=True),
    "beta1": _o(0.5, float, "Adam beta1"),
    "beta2": _o(0.999, float, "Adam beta2"),
    "weight_decay": _o(0.0, float, "Adam weight decay"),
    # ---- loss weights (names as in the paper's code) -----------------------------------------
    "lambda_Feat": _o(2.0, float, "feature loss between two anonymizations M, M2"),
    "lambda_WR_Feat": _o(1.0, float, "feature loss between two wrong recoveries WR1, WR2"),
    "lambda_false_recon_diff": _o(1.0, float, "feature loss between anonymization M and wrong recovery WR1"),
    "lambda_FR": _o(2.0, float, "face recognition (A-Softmax) terms"),
    "lambda_FR_M": _o(1.0, float, "weight of M inside the FR terms"),
    "lambda_FR_WR": _o(1.0, float, "weight of WR inside the FR terms"),
    "lambda_dis": _o(1.0, float, "password classifier (L_aux)"),
    "lambda_GAN": _o(1.0, float, "adversarial terms"),
    "lambda_GAN_recon": _o(1.0, float, "weight of head R inside the adversarial terms"),
    "lambda_GAN_M": _o(1.0, float, "weight of head M inside the adversarial terms"),
    "lambda_GAN_WR": _o(1.0, float, "weight of head WR inside the adversarial terms"),
    "lambda_L1": _o(10.0, float, "L1 between anonymization M and the input"),
    "lambda_rand_recon_L1": _o(10.0, float, "L1 between wrong recovery WR1 and the input"),
    "lambda_G_recon": _o(100.0, float, "L1 between recovery R and the input"),
    "near_wrong_passwords": _o(False, bool, "training draws the first wrong password as the recovery password with "
                                            "k of its bits flipped, k uniform in 1..L (false, the paper: uniform)"),
    "lambda_mode_seeking": _o(0.0, float, "mode-seeking term (Mao et al. 2019) on M, M2 and on WR1, WR2: 1 / (mean "
                                          "pixel distance over mean password distance); 0 (the paper): off"),
    # ---- logging and outputs -----------------------------------------------------------------
    "print_freq": _o(50, int, "iterations between loss log lines"),
    "ckpt_per_epoch": _o(4, int, "checkpoints per epoch (besides the one at each epoch end)"),
    "keep_ckpts": _o(0, int, "keep only the newest N intermediate checkpoints (0: keep all)"),
    "html_freq": _o(1000, int, "iterations between HTML result pages"),
    "display_id": _o(1, int, "visdom window id base (0 turns visdom off)"),
    "display_server": _o("http://localhost", str, "visdom server"),
    "display_port": _o(8097, int, "visdom port"),
    "display_env": _o("main", str, "visdom environment"),
    "display_freq": _o(200, int, "iterations between visdom image grids"),
    "display_autostart": _o(False, bool, "start a visdom server on loopback if none answers"),
    "eval_batches": _o(0, int, "held-out batches measured at the end of training (0: all)"),
    "val_freq": _o(100, int, "iterations between measurements of the validation curve (0: off)"),
    "val_batches": _o(2, int, "validation batches measured for each point of the validation curve"),
}

# The sections of SCHEMA, each named by its first key (the headings above); --help groups keys so.
SECTIONS: dict[str, str] = {
    "name": "run", "data_root": "data", "passwd_length": "passwords", "which_model_netG": "networks",
    "fr_pretrained": "face recogniser", "lr": "optimisation", "lambda_Feat": "loss weights",
    "print_freq": "logging and outputs",
}

# The configs shipped with the code: found here when a relative path such as config/smoke.yaml does
# not exist from the current folder (an installed package run elsewhere).
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config")


def sections() -> list[tuple[str, list[str]]]:
    """(title, keys) of every section of SCHEMA, in the schema's order."""
    out: list[tuple[str, list[str]]] = []
    for key in SCHEMA:
        if key in SECTIONS or not out:
            out.append((SECTIONS.get(key, "settings"), []))
        out[-1][1].append(key)
    return out


def _type_name(opt: Option) -> str:
    name = {bool: "bool", int: "int", float: "float", str: "str"}[opt.type]
    return name + " or none" if opt.nullable else name


def _default_text(opt: Option) -> str:
    if opt.default is None:
        return "none"
    if opt.type is bool:
        return "true" if opt.default else "false"
    return repr(opt.default) if opt.default == "" else str(opt.default)


def add_schema_arguments(parser, title: str = "{section}") -> None:
    """Add every key of SCHEMA to an argparse ``parser`` as ``--key``, one argument group per
    section, with its type, default and help (for --help: the values themselves are parsed by
    ``parse_overrides``)."""
    for section, keys in sections():
        group = parser.add_argument_group(title.format(section=section))
        for key in keys:
            opt = SCHEMA[key]
            extra = f"; one of {', '.join(map(str, opt.choices))}" if opt.choices else ""
            group.add_argument(f"--{key}", metavar=_type_name(opt).upper().replace(" OR NONE", "|none"),
                               help=f"{opt.help} ({_type_name(opt)}, default: {_default_text(opt)}{extra})"
                               .replace("%", "%%"))


class ScriptHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help of the scripts: the description as written, and every option with its type and default
    in the form the config keys use: ``help (type, default: D)``."""

    def _get_default_metavar_for_optional(self, action):
        return getattr(action.type, "__name__", "str")

    def _get_help_string(self, action):
        text = action.help or ""
        if action.help == argparse.SUPPRESS or action.dest == "help":
            return text
        if action.nargs == 0:
            return f"{text} (flag)"
        kind = getattr(action.type, "__name__", "str")
        if action.required or not action.option_strings:
            return f"{text} ({kind}, required)"
        if "default" in text:  # the help says what the default is
            return f"{text} ({kind})"
        default = "none" if action.default is None else "%(default)s"
        return f"{text} ({kind}, default: {default})"


def schema_help(width: int = 100) -> str:
    """Every key of SCHEMA as text, grouped by section: ``key (type, default: D): help``."""
    import textwrap

    lines = ["The keys a config file may hold, by section (the run folder's config.yaml has them all):", ""]
    for section, keys in sections():
        lines.append(f"config keys: {section}")
        for key in keys:
            opt = SCHEMA[key]
            extra = f"; one of {', '.join(map(str, opt.choices))}" if opt.choices else ""
            text = f"{key} ({_type_name(opt)}, default: {_default_text(opt)}{extra}): {opt.help}"
            lines += textwrap.wrap(text, width, initial_indent="  ", subsequent_indent="      ")
        lines.append("")
    return "\n".join(lines)


# The range of every numeric key: low and high bounds (inclusive unless marked open). Floats must also
# be finite (no NaN, no infinity) whatever their key.
LIMITS: dict[str, dict] = {
    **{k: dict(low=0, high=2 ** 32 - 1) for k in ("seed", "synthetic_seed")},
    "epochs": dict(low=1), "max_iters": dict(low=0), "time_limit_min": dict(low=0),
    "synthetic_identities": dict(low=1), "synthetic_images_per_id": dict(low=1, high=1000),
    "img_size": dict(low=64),  # the discriminator's depth
    "batch_size": dict(low=1), "workers": dict(low=0), "passwd_length": dict(low=4),
    "ngf": dict(low=1), "ndf": dict(low=1), "n_layers_D": dict(low=1), "init_gain": dict(low=0),
    "pool_size": dict(low=0), "fr_pretrain_epochs": dict(low=0), "fr_pretrain_lr": dict(low=0),
    "fr_width": dict(low=0, low_open=True), "fr_crop_height": dict(low=16), "fr_crop_width": dict(low=16),
    "fr_num_classes": dict(low=0), "angle_margin": dict(low=1, high=4), "angle_gamma": dict(low=0),
    "angle_lambda_min": dict(low=0), "angle_lambda_max": dict(low=0),
    **{k: dict(low=0) for k in ("lr", "G_lr", "Q_lr", "D_lr", "FR_lr", "weight_decay")},
    **{k: dict(low=0, high=1, high_open=True) for k in ("beta1", "beta2")},
    **{k: dict(low=0) for k in SCHEMA if k.startswith("lambda_")},
    "print_freq": dict(low=1), "ckpt_per_epoch": dict(low=0), "keep_ckpts": dict(low=0), "html_freq": dict(low=1),
    "display_id": dict(low=0), "display_port": dict(low=1, high=65535), "display_freq": dict(low=1),
    "eval_batches": dict(low=0), "val_freq": dict(low=0), "val_batches": dict(low=1),
}


def check_number(value, name: str, *, low=None, high=None, low_open: bool = False, high_open: bool = False,
                 integer: bool = False, error: type[Exception] = ConfigError):
    """``value`` when it is a finite number (an integer if ``integer``) within [low, high] (bounds
    excluded where open); otherwise ``error`` with one line naming ``name`` (an option, a key, a file)."""
    if integer:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    else:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = not ((low is not None and (value < low or (low_open and value == low))) or
                  (high is not None and (value > high or (high_open and value == high))))
    if not ok:
        what = "an integer" if integer else "a finite number"
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            bounds.append(f"{'<' if high_open else '<='} {high:g}")
        raise error(f"{name} must be {what}{' ' + ' and '.join(bounds) if bounds else ''}, got {value!r}")
    return value


# ---- parsing helpers ------------------------------------------------------------------------

def _nearest(key: str) -> str:
    match = difflib.get_close_matches(key, SCHEMA.keys(), n=1, cutoff=0.0)
    return match[0] if match else ""


def _unknown(key: str, where: str) -> ConfigError:
    return ConfigError(f"{where}: unknown config key '{key}' (did you mean '{_nearest(key)}'?)")


def _check_type(key: str, value: Any, where: str) -> Any:
    opt = SCHEMA[key]
    if value is None:
        if opt.nullable:
            return None
        raise ConfigError(f"{where}: key '{key}' may not be null (expected {opt.type.__name__})")
    if opt.type is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: key '{key}' expects true or false, got {value!r}")
    elif opt.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: key '{key}' expects an integer, got {value!r}")
    elif opt.type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: key '{key}' expects a number, got {value!r}")
        value = float(value)
    elif opt.type is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: key '{key}' expects a string, got {value!r}")
    if opt.choices and value not in opt.choices:
        raise ConfigError(f"{where}: key '{key}' must be one of {', '.join(map(str, opt.choices))}; "
                          f"got {value!r}")
    if opt.type in (int, float):
        name = f"--{key}" if where == "command line" else f"key '{key}'"
        check_number(value, f"{where}: {name}", integer=opt.type is int, **LIMITS.get(key, {}))
    return value


def check_value(key: str, value: Any, where: str) -> Any:
    """A value of a known key, read from ``where`` (a file, a checkpoint): type, finiteness and range."""
    if key not in SCHEMA:
        raise _unknown(key, where)
    return _check_type(key, value, where)


def _parse_flag_value(key: str, text: str) -> Any:
    """Turn a command-line string into the key's type."""
    opt = SCHEMA[key]
    low = text.strip().lower()
    if opt.nullable and low in ("none", "null", ""):
        return None
    try:
        if opt.type is bool:
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if opt.type is int:
            return int(text, 0)
        if opt.type is float:
            return float(text)
        return text
    except ValueError:
        raise ConfigError(f"command line: --{key} expects {opt.type.__name__}, got {text!r}") from None


def resolve_config_path(path: str) -> str:
    """``path``, or for a relative ``config/NAME.yaml`` that is not there, the shipped one."""
    if os.path.isfile(path) or os.path.isabs(path):
        return path
    parts = os.path.normpath(path).split(os.sep)
    if len(parts) == 2 and parts[0] == "config" and os.path.isfile(os.path.join(CONFIG_DIR, parts[1])):
        return os.path.join(CONFIG_DIR, parts[1])
    return path


def load_yaml(path: str) -> dict:
    path = resolve_config_path(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    out = {}
    for key, value in data.items():
        if key not in SCHEMA:
            raise _unknown(str(key), path)
        out[key] = _check_type(key, value, path)
    return out


def parse_overrides(argv: Iterable[str]) -> dict:
    """``--key value`` or ``--key=value`` pairs; a bare ``--flag`` of a bool key means true."""
    argv = list(argv)
    out, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"command line: expected --key value, got {arg!r}")
        body = arg[2:]
        if "=" in body:
            key, text = body.split("=", 1)
            i += 1
        else:
            key = body
            if key in SCHEMA and SCHEMA[key].type is bool and (i + 1 >= len(argv) or argv[i + 1].startswith("--")):
                text = "true"
                i += 1
            else:
                if i + 1 >= len(argv):
                    raise ConfigError(f"command line: --{key} needs a value")
                text = argv[i + 1]
                i += 2
        key = key.replace("-", "_") if key.replace("-", "_") in SCHEMA else key
        if key not in SCHEMA:
            raise _unknown(key, "command line")
        out[key] = _check_type(key, _parse_flag_value(key, text), "command line")
    return out


class Config(dict):
    """A dict with attribute access, holding every key of SCHEMA."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        if key not in SCHEMA:
            raise _unknown(key, "config")
        self[key] = value


def validate(cfg: Config) -> Config:
    if cfg.passwd_length <= 0 or cfg.passwd_length % 4:
        raise ConfigError(f"config: passwd_length must be a positive multiple of 4, got {cfg.passwd_length}")
    if cfg.img_size % 4:
        raise ConfigError(f"config: img_size must be a multiple of 4, got {cfg.img_size}")
    if cfg.which_model_netG.startswith("unet_"):  # unet_N halves the image down to 1x1 at N x N
        side = int(cfg.which_model_netG.split("_")[1])
        if cfg.img_size % side:
            raise ConfigError(f"config: {cfg.which_model_netG} needs img_size a multiple of {side}, "
                              f"got {cfg.img_size}")
    if cfg.passwd_inject != "input" and not cfg.which_model_netG.startswith("unet_"):
        raise ConfigError(f"config: passwd_inject {cfg.passwd_inject} is for the U-Net generators, "
                          f"not {cfg.which_model_netG}")
    if cfg.lambda_GAN_M + cfg.lambda_GAN_recon + cfg.lambda_GAN_WR <= 0:
        raise ConfigError("config: lambda_GAN_M, lambda_GAN_recon and lambda_GAN_WR are weights of an average; "
                          "at least one must be positive")
    return cfg


def make_config(yaml_path: str | None = None, argv: Iterable[str] = (), **overrides) -> Config:
    """Defaults, then the YAML file, then command-line flags, then keyword overrides (for code/tests)."""
    cfg = Config({k: o.default for k, o in SCHEMA.items()})
    if yaml_path:
        cfg.update(load_yaml(yaml_path))
    cfg.update(parse_overrides(argv))
    for key, value in overrides.items():
        if key not in SCHEMA:
            raise _unknown(key, "config")
        cfg[key] = _check_type(key, value, "config")
    return validate(cfg)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(dict(cfg), sort_keys=False)
