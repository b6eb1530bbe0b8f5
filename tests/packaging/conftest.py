"""Session fixtures for the wheel tests: the built wheel and a fresh venv holding it.

The wheel is built from a *copy* of the repository (taken once per session), so the build
never writes ``build/`` or ``*.egg-info`` into the working tree and the tests check one
consistent snapshot even while the sources are being edited.

Building needs no network:

1. ``pip wheel --no-deps --no-build-isolation``: uses this venv's setuptools (works when it
   can make wheels: setuptools >= 70.1, or the ``wheel`` package installed);
2. otherwise ``pip wheel --no-deps`` with build isolation, fetching the build requirements
   only from the *local* (``file:``) package indexes and find-links pip is configured with;
   pip's configuration files are disabled for that call, so no remote index is consulted.

The tests are skipped (with the reasons) only if neither is possible; any other build
error fails them.

The fresh venv has no pip and no dependencies of its own: the wheel is installed into it by
this venv's pip (``--python``, ``--no-deps --no-index``), and its python runs with
``PYTHONPATH`` set to this venv's site-packages, which provides trio, msgspec, ... but not
``trioxide``: the editable install there is a ``.pth`` file, which Python processes only in
site directories, never on ``PYTHONPATH``. The tests assert that ``trioxide`` is imported
from the fresh venv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Not copied for the build: VCS data, environments, caches, build outputs, trace files.
_COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.so",  # a build of traces/_cruns.c in the tree: the wheel builds its own
    "*.pyc",
    ".*_cache",
    ".hypothesis",
    "traces-out",
    "*.jsonl",
)

#: pip's messages (old and new) when the isolated build environment cannot be installed.
_BUILD_DEPS_FAILED = re.compile(
    r"install(ing)? build dependencies did not run successfully"
    r"|installing build dependencies: finished with status 'error'"
    r"|when installing build dependencies",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class BuiltWheel:
    path: Path  # the .whl file
    source: Path  # the repository snapshot it was built from


@dataclass(frozen=True)
class FreshVenv:
    root: Path
    python: Path
    bin: Path
    site_packages: Path
    env: dict[str, str]  # the environment to run its python (and tools) with

    def run(
        self, *args: str | Path, cwd: Path | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``args`` (a program and its arguments) in this environment."""
        return subprocess.run(
            [str(a) for a in args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def main_site_packages() -> list[str]:
    """This venv's site-packages directories (purelib, platlib)."""
    paths = [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    return list(dict.fromkeys(paths))


def _pip(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def _local_package_sources() -> list[str]:
    """pip options naming only the local (``file:`` or path) indexes and find-links that
    pip is configured with (configuration files and ``PIP_*`` variables)."""
    listed = _pip("config", "list")
    index_urls: list[str] = []
    find_links: list[str] = []
    for line in listed.stdout.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        option = key.rsplit(".", 1)[-1]
        for item in value.strip().strip("'\"").split():
            local = item.startswith("file:") or (
                "://" not in item and Path(item).expanduser().exists()
            )
            if not local:
                continue
            if option in {"index-url", "extra-index-url"} and item not in index_urls:
                index_urls.append(item)
            elif option == "find-links" and item not in find_links:
                find_links.append(item)
    args: list[str] = []
    if index_urls:
        args += ["--index-url", index_urls[0]]
        for url in index_urls[1:]:
            args += ["--extra-index-url", url]
    else:
        args.append("--no-index")
    for link in find_links:
        args += ["--find-links", link]
    return args if (index_urls or find_links) else []


def _tail(proc: subprocess.CompletedProcess[str], lines: int = 25) -> str:
    return "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-lines:])


def build_wheel(source: Path, out: Path) -> Path:
    """Build the wheel of *source* into *out* without network (see the module docstring)."""
    attempts: list[str] = []
    direct = _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source))
    if direct.returncode != 0:
        attempts.append(f"pip wheel --no-build-isolation:\n{_tail(direct)}")
        local = _local_package_sources()
        if not local:
            pytest.skip(
                "cannot build the wheel offline: this venv's setuptools cannot make wheels "
                "and pip is configured with no local package index to build in isolation.\n"
                + attempts[0]
            )
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"}
        }
        env["PIP_CONFIG_FILE"] = os.devnull  # no configured (possibly remote) index
        isolated = _pip("wheel", "--no-deps", *local, "-w", str(out), str(source), env=env)
        if isolated.returncode != 0:
            attempts.append(f"pip wheel {' '.join(local)}:\n{_tail(isolated)}")
            report = "\n\n".join(attempts)
            if _BUILD_DEPS_FAILED.search(isolated.stdout + isolated.stderr):
                pytest.skip(f"cannot build the wheel offline (no build requirements):\n{report}")
            pytest.fail(f"building the wheel failed:\n{report}", pytrace=False)
    wheels = sorted(out.glob("trioxide-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> BuiltWheel:
    """The project's wheel, built once per session from a snapshot of the repository."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    shutil.copytree(REPO, source, symlinks=True, ignore=_COPY_IGNORE)
    return BuiltWheel(build_wheel(source, base / "dist"), source)


@pytest.fixture(scope="session")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory, built_wheel: BuiltWheel) -> FreshVenv:
    """A new venv with only the wheel installed; dependencies come from ``PYTHONPATH``."""
    root = tmp_path_factory.mktemp("venv") / "fresh"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=60
    )
    python = root / "bin" / "python"
    installed = _pip(
        "--python", str(python), "install", "--no-deps", "--no-index", str(built_wheel.path)
    )
    assert installed.returncode == 0, _tail(installed)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "MYPYPATH", "PYTHONSAFEPATH"}
        and not k.startswith(("PYTEST_", "TRIOXIDE_"))  # the installed package as it is
    }
    env["PYTHONPATH"] = os.pathsep.join(main_site_packages())
    env["PATH"] = os.pathsep.join([str(root / "bin"), env.get("PATH", "")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return FreshVenv(root, python, root / "bin", Path(purelib), env)
