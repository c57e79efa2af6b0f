"""The repository installs as a package (``pip install .`` / ``pip install -e .``): its dependencies
are requirements.txt's, every package and command module is in it with the shipped configs, the
console commands run, and installing it into a set-up venv installs nothing else (torch above all).

The pip calls are offline (``--no-build-isolation``, ``PIP_NO_INDEX``) and work on a copy of the
tracked files, so the checkout gets no build/ or egg-info folder."""
from __future__ import annotations

import glob
import importlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {"fit-train", "fit-anonymize", "fit-evaluate", "fit-save-visual", "fit-diff-passwords"}
NOT_SHIPPED = {"tests", "bench", "docs", "pretrained_models", "build", "data", "checkpoints"}


def project() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_dependencies_are_read_from_requirements_txt():
    meta = project()
    assert "dependencies" not in meta["project"] and "dependencies" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}
    assert any(r.startswith("setuptools") and "<81" in r for r in meta["build-system"]["requires"])  # visdom's build


def test_every_package_and_command_module_is_listed():
    setup = project()["tool"]["setuptools"]
    tops = {d for d in os.listdir(REPO) if os.path.isdir(os.path.join(REPO, d)) and not d.startswith(".")
            and (glob.glob(os.path.join(REPO, d, "*.py")) or glob.glob(os.path.join(REPO, d, "*.yaml")))}
    assert set(setup["packages"]) == tops - NOT_SHIPPED
    scripts = {f[:-3] for f in os.listdir(REPO) if f.endswith(".py")}
    assert set(setup["py-modules"]) == scripts
    commands = project()["project"]["scripts"]
    assert COMMANDS <= set(commands)
    for target in commands.values():
        module, func = target.split(":")
        assert module in scripts and callable(getattr(importlib.import_module(module), func))


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory) -> str:
    """The tracked (and new, not ignored) files of the checkout, copied."""
    dst = str(tmp_path_factory.mktemp("tree") / "src")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if os.path.isfile(os.path.join(REPO, rel)):
            os.makedirs(os.path.join(dst, os.path.dirname(rel)), exist_ok=True)
            shutil.copy2(os.path.join(REPO, rel), os.path.join(dst, rel))
    return dst


def pip(*args, cwd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    proc = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_the_wheel_holds_the_packages_configs_and_commands(tree_copy, tmp_path):
    pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), ".", cwd=tree_copy)
    (wheel,) = glob.glob(str(tmp_path / "dist" / "*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for cfg in os.listdir(os.path.join(REPO, "config")):
        assert f"config/{cfg}" in names
    for package in project()["tool"]["setuptools"]["packages"]:
        for src in glob.glob(os.path.join(REPO, package, "*.py")):
            assert f"{package}/{os.path.basename(src)}" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert all(f"{c} = " in text for c in COMMANDS)

    # installed elsewhere and run from another folder: the command works, config/ paths find the shipped files
    site = tmp_path / "site"
    pip("install", "-q", "--no-deps", "--target", str(site), wheel, cwd=str(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))
    run = subprocess.run([str(site / "bin" / "fit-train"), "--help"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "--time_limit_min" in run.stdout, run.stderr
    code = "from utils.config import make_config; print(make_config('config/smoke.yaml').name)"
    run = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "smoke", run.stderr


def test_installing_it_into_the_set_up_venv_installs_nothing_else(tree_copy, tmp_path):
    """Even without --no-deps (CI uses it), pip finds every dependency satisfied: no torch download."""
    report = tmp_path / "report.json"
    pip("install", "-q", "--dry-run", "--no-build-isolation", "-e", ".", "--report", str(report), cwd=tree_copy)
    installs = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
    assert installs == ["face-identity-transformer"]
