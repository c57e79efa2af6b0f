"""--help of the training and result scripts lists every option and every config key, with its type,
default and help, grouped by the sections of utils/config.py's schema."""
from __future__ import annotations

import contextlib
import re

import pytest

import evaluate
import main_test_diff_passwds
import main_train
import save_visual
from utils.config import SCHEMA, SECTIONS, _default_text, _type_name, sections


def help_text(script, capsys) -> str:
    with pytest.raises(SystemExit) if script is not main_train else contextlib.nullcontext() as stop:
        rc = script.main(["--help"])  # argparse exits; main_train returns
    if stop is not None:
        rc = stop.value.code
    assert rc == 0
    return re.sub(r"\s+", " ", capsys.readouterr().out)  # argparse wraps lines at the terminal width


def section_texts(text: str) -> dict[str, str]:
    """title -> the help text of the section ``config keys: title`` (in the order shown)."""
    titles = [title for title, _ in sections()]
    out = {}
    for part in text.split("config keys: ")[1:]:
        title = max((t for t in titles if part.startswith(t)), key=len)
        out[title] = part[len(title):]
    return out


def entries(body: str, keys: list[str], marker) -> dict[str, str]:
    """key -> its text: from where ``marker(key)`` starts to where the next key's starts."""
    starts = [body.index(marker(key)) for key in keys]
    assert starts == sorted(starts), "keys out of the schema's order"
    return {key: body[a:b] for key, a, b in zip(keys, starts, starts[1:] + [len(body)])}


def test_sections_cover_the_schema_in_order():
    found = sections()
    assert [key for _, keys in found for key in keys] == list(SCHEMA)  # every key once, in order
    assert [title for title, _ in found] == list(SECTIONS.values())
    assert all(key in SCHEMA for key in SECTIONS)


@pytest.mark.parametrize("script", [main_train, save_visual, main_test_diff_passwds, evaluate],
                         ids=lambda m: m.__name__)
def test_help_lists_every_config_key_by_section(script, capsys):
    text = help_text(script, capsys)
    by_section = section_texts(text)
    assert list(by_section) == [title for title, _ in sections()]
    marker = (lambda k: f"--{k} ") if script is main_train else (lambda k: f" {k} (")
    for title, keys in sections():
        for key, entry in entries(by_section[title], keys, marker).items():
            opt = SCHEMA[key]
            assert " ".join(opt.help.split()[:4]) in entry, f"{key}: help missing in {entry!r}"
            assert f"{_type_name(opt)}, default: {_default_text(opt)}" in entry, f"{key}: {entry!r}"
            if opt.choices:
                assert "one of " + ", ".join(map(str, opt.choices)) in entry


@pytest.mark.parametrize("script", [save_visual, main_test_diff_passwds, evaluate], ids=lambda m: m.__name__)
def test_help_gives_every_script_option_its_type_and_default(script, capsys):
    text = help_text(script, capsys).split("The keys a config file may hold")[0]
    listed = text.split("options: ", 1)[1]
    options = [o for o in dict.fromkeys(re.findall(r"(?:^| )(--[a-z][a-z_-]+)", listed)) if o != "--help"]
    assert len(options) >= 6
    for option, entry in entries(listed, options, lambda o: f" {o} ").items():
        assert re.search(r"\((?:int|float|str)(?:, (?:required|default: \S+))?\)|\(flag\)", entry), \
            f"{option}: no type in {entry!r}"
        if "default" not in entry and "required" not in entry:
            assert "(flag)" in entry, f"{option}: no default in {entry!r}"


def test_main_train_without_a_config_says_how_to_get_help(capsys):
    assert main_train.main([]) == 2
    assert "--help lists every key" in capsys.readouterr().err
