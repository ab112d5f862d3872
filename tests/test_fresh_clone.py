"""What a new user gets from a fresh clone: a current, hashed lock that is what is installed,
a README whose files, settings and demo listing are true, and no machine-specific paths."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pydantic import BaseModel

from benchmarks.datasets import datasets_dir
from pipeline.settings import Settings
from sku_templates import Sku
from tests.conftest import ROOT

LOCK = ROOT / "requirements" / "lock.txt"
PIP_LOCK = ROOT / "requirements" / "pip.txt"
README = (ROOT / "README.md").read_text()
SKUFORGE_RUN = [sys.executable, "-m", "service.cli", "run"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# one requirement of a pip-compile lock: "name==version \" then "--hash=sha256:..." lines
ENTRY = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\\n"  # name==version \
    r"((?:[ \t]+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)",  # --hash=sha256:... lines
    re.M,
)


def locked(path: Path) -> dict[str, str]:
    text = path.read_text()
    entries = {canonicalize_name(m.group(1)): m.group(2) for m in ENTRY.finditer(text)}
    # every line that is not a comment belongs to an entry: nothing unpinned or unhashed
    requirement_lines = [
        line for line in text.splitlines() if line and not line.lstrip().startswith(("#", "--"))
    ]
    assert len(requirement_lines) == len(entries), set(requirement_lines) - {
        f"{n}=={v} \\" for n, v in entries.items()
    }
    return entries


# -- the lock ---------------------------------------------------------------------------------
def lock_check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(root / "scripts" / "lock.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_lock_is_current() -> None:
    done = lock_check(ROOT)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The three files the lock check reads, in a scratch repository layout."""
    locks = ("requirements/lock.txt", "requirements/lock-api.txt", "requirements/lock-gpu.txt")
    for name in ("scripts/lock.sh", "pyproject.toml", *locks):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_lock_check_ignores_what_does_not_change_resolution(repo_copy: Path) -> None:
    pyproject = repo_copy / "pyproject.toml"
    _edit(pyproject, 'version = "0.1.0"', 'version = "9.9.9"')
    _edit(pyproject, '  "numpy>=1.26",\n', "")
    _edit(pyproject, '  "httpx>=0.27",\n', '  "httpx >= 0.27",\n  "numpy>=1.26",\n')
    assert lock_check(repo_copy).returncode == 0


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('  "httpx>=0.27",\n', '  "httpx>=0.28",\n'),  # a runtime bound
        ('  "pytest>=8.2",\n', '  "pytest>=8.2",\n  "freezegun",\n'),  # a dev tool
        ('  "diffusers>=0.31",\n', '  "diffusers>=0.32",\n'),  # the gpu extra
        ('requires = ["setuptools>=69", "wheel"]', 'requires = ["setuptools>=70", "wheel"]'),
        ('requires-python = ">=3.11"', 'requires-python = ">=3.12"'),
    ],
)
def test_lock_check_fails_when_the_dependency_lists_change(
    repo_copy: Path, old: str, new: str
) -> None:
    _edit(repo_copy / "pyproject.toml", old, new)
    done = lock_check(repo_copy)
    assert done.returncode == 1
    assert "requirements/lock.txt is stale" in done.stderr
    assert "Regenerate it with ./scripts/lock.sh" in done.stderr


def test_lock_check_fails_without_a_lock(repo_copy: Path) -> None:
    (repo_copy / "requirements" / "lock.txt").unlink()
    done = lock_check(repo_copy)
    assert done.returncode == 1 and "./scripts/lock.sh" in done.stderr


def test_lock_pins_every_dependency_with_hashes() -> None:
    entries = locked(LOCK)
    project = PYPROJECT["project"]
    direct = [
        *project["dependencies"],
        *project["optional-dependencies"]["dev"],
        *project["optional-dependencies"]["gpu"],
        *PYPROJECT["build-system"]["requires"],
    ]
    for spec in map(Requirement, direct):
        name = canonicalize_name(spec.name)
        assert name in entries, f"{name} is not in the lock"
        assert spec.specifier.contains(entries[name], prereleases=True), (spec, entries[name])
    assert "torch" not in entries or entries["torch"].endswith("+cpu")  # never a CUDA build
    assert not [name for name in entries if name.startswith("nvidia-")]
    # the API image's lock ships neither torch nor diffusers; the GPU worker's has CUDA torch
    api = locked(ROOT / "requirements" / "lock-api.txt")
    assert not {"torch", "diffusers", "transformers", "pytest"} & set(api)
    assert all(api[name] == entries[name] for name in api)  # the versions CI tested
    gpu = locked(ROOT / "requirements" / "lock-gpu.txt")
    assert "+" not in gpu["torch"] and gpu["diffusers"] == entries["diffusers"]
    pip = locked(PIP_LOCK)
    assert list(pip) == ["pip"]


def test_installed_packages_are_the_locked_versions() -> None:
    """The venv the tests run in was installed from this lock (bootstrap's stamp is not
    trusted for it: this reads each distribution's own metadata)."""
    entries = {**locked(LOCK), **locked(PIP_LOCK)}
    wrong = {}
    for name, version in entries.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        if installed != version:
            wrong[name] = (version, installed)
    assert wrong == {}, f"locked vs installed (run ./scripts/bootstrap.sh): {wrong}"


# -- shared data ------------------------------------------------------------------------------
def test_datasets_dir_is_the_variable_or_beside_the_clone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SKUFORGE_DATASETS", str(tmp_path / "data"))
    assert datasets_dir() == tmp_path / "data"  # even before it exists: no silent fallback
    monkeypatch.delenv("SKUFORGE_DATASETS")
    assert datasets_dir() == ROOT.parent / "shared" / "datasets"


def test_no_tracked_file_names_a_machine_path() -> None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    patterns = ["-e", "/work/shared", "-e", "/work/main"]
    this_file = ":(exclude)tests/test_fresh_clone.py"  # it names the paths it looks for
    done = subprocess.run(
        ["git", "grep", "-n", *patterns, "--", ".", this_file],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout  # 1: no match


# -- README -----------------------------------------------------------------------------------
def _setting_names(model: type[BaseModel], prefix: str = "SKUFORGE_") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            names += _setting_names(field.annotation, env + "__")
        else:
            names.append(env)
    return names


def test_readme_lists_every_setting() -> None:
    names = _setting_names(Settings)
    assert "SKUFORGE_RESULT_BACKEND" in names and "SKUFORGE_API__KEY_CACHE_S" in names
    missing = [n for n in [*names, "SKUFORGE_DATASETS"] if f"`{n}`" not in README]
    assert missing == [], f"add these to README.md's Settings table: {missing}"


def test_files_the_readme_names_exist() -> None:
    paths = set(re.findall(r"(?<![\w-])((?:examples|scripts|requirements|docs)/[\w.-]+)", README))
    assert "examples/sku.json" in paths and "scripts/lock.sh" in paths
    assert [p for p in paths if not (ROOT / p).exists()] == []


def test_example_sku_json_is_the_yaml_sku() -> None:
    as_json = json.loads((ROOT / "examples" / "sku.json").read_text())
    as_yaml = yaml.safe_load((ROOT / "examples" / "sku.yaml").read_text())
    assert as_json == as_yaml
    assert Sku.model_validate(as_json).id == "OIL-MOROCCO-200"
    assert "`sku.json`" in (ROOT / "examples" / "README.md").read_text()  # licence row


def _readme_demo_listing() -> set[str]:
    block = README.split("holds exactly these 33 files:", 1)[1].split("```")[1]
    tokens = block.split()
    files: set[str] = set()
    for i, token in enumerate(tokens):
        if token == "...":  # views/view_00.png ... views/view_07.png
            first, last = tokens[i - 1], tokens[i + 1]
            low, high = (int(re.findall(r"\d+", t)[-1]) for t in (first, last))
            width = len(re.findall(r"\d+", first)[-1])
            files |= {re.sub(r"\d+(?=\.\w+$)", f"{n:0{width}d}", first) for n in range(low, high)}
        else:
            files.add(token)
    return files


@pytest.mark.slow
def test_readme_lists_exactly_what_the_demo_writes(tmp_path: Path) -> None:
    demo = (ROOT / "scripts" / "demo.sh").read_text()
    args = ["examples/capture.jpg", "--sku", "examples/sku.yaml", "--brand", "examples/brand.yaml"]
    assert f"run {' '.join(args)}" in demo  # the same run as the demo script
    out = tmp_path / "demo"
    done = subprocess.run(
        [*SKUFORGE_RUN, *args, "--out", str(out), "--store", str(tmp_path / "store"), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    listed = _readme_demo_listing()
    assert len(listed) == 33
    assert written == listed, (sorted(written - listed), sorted(listed - written))
