"""CI runs the README's own commands: these tests keep the README, the CI script and the install
files from drifting apart."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".ci"))
from readme_commands import command_block  # noqa: E402


def read(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def block(which: str) -> list[str]:
    out = subprocess.run([sys.executable, os.path.join(ROOT, ".ci", "readme_commands.py"), which],
                         capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_setup_block_creates_a_venv_first_and_installs_the_requirements():
    setup = block("setup")
    assert re.match(r"python3? -m venv (\S+) && \. \1/bin/activate$", setup[0]), setup[0]
    installs = [line for line in setup if re.search(r"\bpip install\b", line)]
    assert len(installs) == 1 and installs[0].endswith("pip install -r requirements.txt")
    # The build constraint reaches both pip generations: PIP_CONSTRAINT (pip <= 26.2) and
    # PIP_BUILD_CONSTRAINT (pip >= 25.3).
    for var in ("PIP_CONSTRAINT", "PIP_BUILD_CONSTRAINT"):
        m = re.search(var + r"=(\S+)", installs[0])
        assert m, f"the install line lost {var}"
        assert "setuptools<81" in read(m.group(1)).splitlines()


def test_test_block_is_the_plain_pytest_command():
    assert block("test") == ["python -m pytest -q"]


def test_ci_runs_the_readme_blocks_and_the_slow_tests():
    ci = read(".ci/run")
    assert "readme_commands.py setup" in ci and "readme_commands.py test" in ci
    assert "PIP_NO_CACHE_DIR=1" in ci  # a cached visdom wheel would hide a broken build
    assert "--upgrade pip" in ci  # once with the newest pip
    assert "-m slow" in ci
    package = "pip install --no-deps --no-build-isolation -e ."  # the README's, and it installs no dependency
    assert f"`{package}`" in read("README.md").replace("\n", " ")
    assert package.replace("install", "install -q") in ci
    allowed = ("python -m pip install -q --upgrade pip", "pip install -r requirements-dev.txt",
               package.replace("install", "install -q"))
    for line in allowed:
        ci = ci.replace(line, "")
    assert "pip install" not in ci  # no private install
    for command in ("fit-train", "fit-anonymize", "fit-evaluate", "fit-save-visual", "fit-diff-passwords"):
        assert command in ci  # each command's --help runs


def test_ci_runs_ruff_after_the_tests_with_the_pinned_version():
    ci = read(".ci/run")
    assert "ruff check ." in ci
    assert ci.index("-m slow") < ci.index("pip install -r requirements-dev.txt") < ci.index("ruff check .")
    pins = [line.strip() for line in read("requirements-dev.txt").splitlines()
            if line.strip() and not line.startswith("#")]
    assert any(re.fullmatch(r"ruff==\d+\.\d+\.\d+", pin) for pin in pins), pins
    assert "[tool.ruff]" in read("pyproject.toml")


def test_requirements_keep_pkg_resources_for_face_recognition_models():
    # face_recognition_models imports pkg_resources at import time; setuptools 81 removed it.
    reqs = [line.split("#")[0].strip() for line in read("requirements.txt").splitlines()]
    assert "setuptools<81" in reqs


@pytest.mark.parametrize("text, heading, expected", [
    ("# T\n\n## Set up\n\nintro\n\n    a\n    b\n\nafter\n\n    c\n", "## Set up", ["a", "b"]),
    ("## Tests\n    x\n## Next\n    y\n", "## Tests", ["x"]),
])
def test_command_block_takes_the_first_indented_run(text, heading, expected):
    assert command_block(text, heading) == expected


@pytest.mark.parametrize("text", ["## Set up\ntext only\n## Tests\n    x\n", "# none\n"])
def test_missing_block_is_an_error(text):
    with pytest.raises(LookupError, match="Set up"):
        command_block(text, "## Set up")


def test_pretrained_models_readme_gives_the_authors_links_names_and_commands():
    """The published links of the authors' README (their two trained models and SphereFace), the
    file names the commands expect, and commands that use them."""
    text = read("pretrained_models/README.md")
    for link in ("https://drive.google.com/drive/folders/1b8vSWgWYJPUmcrMr2ROLhQVRD0RMcftx?usp=sharing",
                 "https://drive.google.com/drive/folders/1NVn5kKzeOavLCSHbPYkp2UBitGRuFoRH?usp=sharing",
                 "https://github.com/clcarwin/sphereface_pytorch/blob/master/model/sphere20a_20171020.7z"):
        assert link in text
    for name in ("sphere20a_20171020.pth", "fit_main.pth.tar", "fit_one_fourth_D_lr_half.pth.tar"):
        assert f"`{name}`" in text
    commands = [ln.strip() for ln in text.splitlines() if ln.startswith("    python ")]
    used = {c.split()[1] for c in commands}
    assert {"anonymize.py", "save_visual.py", "main_test_diff_passwds.py", "evaluate.py", "main_train.py"} <= used
    for command in commands:
        assert os.path.isfile(os.path.join(ROOT, command.split()[1]))
        for word in command.split():
            if word.startswith("config/"):
                assert os.path.isfile(os.path.join(ROOT, word)), word
            if word.startswith("pretrained_models/"):
                assert os.path.basename(word) in ("fit_main.pth.tar",), word


def test_the_readme_serves_result_pages_on_loopback_only():
    serves = [ln.strip() for ln in read("README.md").splitlines() if "http.server" in ln and ln.startswith("    ")]
    assert serves, "README.md shows no command that serves the result pages"
    for command in serves:
        assert "-b 127.0.0.1" in command or "--bind 127.0.0.1" in command, command
    assert any("test_web" in command for command in serves)
