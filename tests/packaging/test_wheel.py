"""The wheel: one import package ``trioxide``, typed, usable next to a user's own packages
named ``runtime``/``traces``/``actors``.

Fixtures (``built_wheel``, ``fresh_venv``) are in ``conftest.py``: the wheel is built once
per session without network and installed, without dependencies, into a fresh venv.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import shutil
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from .conftest import BuiltWheel, FreshVenv, main_site_packages

DIST_INFO = re.compile(r"trioxide-[^/]+\.dist-info")
SUBPACKAGES = ("runtime", "traces", "actors")


def wheel_names(built: BuiltWheel) -> list[str]:
    with zipfile.ZipFile(built.path) as zf:
        return zf.namelist()


def dist_info_file(built: BuiltWheel, name: str) -> str:
    with zipfile.ZipFile(built.path) as zf:
        (path,) = [
            n
            for n in zf.namelist()
            if DIST_INFO.fullmatch(n.split("/")[0]) and n.split("/", 1)[1] == name
        ]
        return zf.read(path).decode()


# -- the wheel's contents ---------------------------------------------------------------


def test_wheel_has_one_top_level_package(built_wheel: BuiltWheel) -> None:
    names = wheel_names(built_wheel)
    tops = {n.split("/")[0] for n in names}
    dist_infos = {t for t in tops if DIST_INFO.fullmatch(t)}
    assert len(dist_infos) == 1, tops
    # Nothing else at the top: no runtime/, traces/, actors/, no stray modules, no .data.
    assert tops - dist_infos == {"trioxide"}, sorted(tops)
    assert dist_info_file(built_wheel, "top_level.txt").split() == ["trioxide"]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_wheel_holds_every_module_of_the_linked_folders(built_wheel: BuiltWheel) -> None:
    # src/trioxide/{runtime,traces,actors} are symlinks: their contents must be in the
    # wheel as real files under trioxide/ (compared with the snapshot the wheel came from).
    names = set(wheel_names(built_wheel))
    for sub in SUBPACKAGES:
        folder = built_wheel.source / sub
        modules = sorted(
            p.relative_to(built_wheel.source).as_posix()
            for p in folder.rglob("*.py")
            if "__pycache__" not in p.parts
        )
        assert f"{sub}/__init__.py" in modules
        missing = [m for m in modules if f"trioxide/{m}" not in names]
        assert not missing, missing
    assert "trioxide/runtime/testing/_plugin.py" in names
    for module in ("__init__.py", "__main__.py", "cli.py", "testing.py"):
        assert f"trioxide/{module}" in names


def cc_available() -> bool:
    return shutil.which("cc") is not None or shutil.which("gcc") is not None


def test_wheel_carries_the_compiled_run_recorders(built_wheel: BuiltWheel) -> None:
    """``setup.py`` builds ``traces/_cruns.c`` as an optional extension (a build that fails
    falls back to the pure-Python recorders without a word), so this says whether it was
    built: with a C compiler (CI has one), it must be."""
    if not cc_available():
        pytest.skip("no C compiler: the wheel has the pure-Python run recorders only")
    names = wheel_names(built_wheel)
    assert [n for n in names if re.fullmatch(r"trioxide/traces/_cruns\.[^/]+\.so", n)], names
    assert "trioxide/traces/_cruns.pyi" in names


def test_wheel_ships_py_typed_and_the_viewer(built_wheel: BuiltWheel) -> None:
    names = set(wheel_names(built_wheel))
    assert "trioxide/py.typed" in names
    assert "trioxide/traces/viewer/index.html" in names
    viewer = {n for n in names if n.startswith("trioxide/traces/viewer/")}
    assert any(n.endswith(".js") for n in viewer), viewer
    assert any(n.endswith(".css") for n in viewer), viewer
    # Every viewer asset of the source is shipped.
    source_viewer = built_wheel.source / "traces" / "viewer"
    for asset in source_viewer.iterdir():
        if asset.suffix in {".html", ".js", ".css"}:
            assert f"trioxide/traces/viewer/{asset.name}" in names


def test_wheel_entry_points(built_wheel: BuiltWheel) -> None:
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(dist_info_file(built_wheel, "entry_points.txt"))
    assert dict(parser["console_scripts"]) == {"trioxide": "trioxide.cli:main"}
    assert dict(parser["pytest11"]) == {"trioxide": "trioxide.runtime.testing._plugin"}


#: Modules that may import a package that is not a dependency: the pytest plugin is only
#: ever imported by pytest.
IMPORT_EXCEPTIONS = {"trioxide/runtime/testing/_plugin.py": {"pytest"}}


def import_time_imports(tree: ast.Module) -> list[tuple[str, int]]:
    """Top-level names imported when the module is imported: module-level statements,
    except ``if TYPE_CHECKING:`` blocks and ``try:`` blocks (guarded optional imports)."""
    found: list[tuple[str, int]] = []

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.extend((a.name.split(".")[0], node.lineno) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((node.module.split(".")[0], node.lineno))
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                walk(node.body)
                walk(node.orelse)

    walk(tree.body)
    return found


def normalized(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def test_wheel_imports_only_declared_dependencies(built_wheel: BuiltWheel) -> None:
    metadata = dist_info_file(built_wheel, "METADATA")
    required = {
        normalized(m[1])
        for m in re.finditer(r"^Requires-Dist: ([A-Za-z0-9._-]+)([^\n]*)$", metadata, re.M)
        if "extra ==" not in m[2]
    }
    assert {"trio", "outcome", "msgspec"} <= required, required
    providers = importlib.metadata.packages_distributions()
    undeclared = []
    with zipfile.ZipFile(built_wheel.path) as zf:
        for name in zf.namelist():
            if not name.endswith(".py"):
                continue
            tree = ast.parse(zf.read(name), name)
            for module, line in import_time_imports(tree):
                if module in sys.stdlib_module_names or module in {"trioxide", "__future__"}:
                    continue
                if module in IMPORT_EXCEPTIONS.get(name, set()):
                    continue
                dists = {normalized(d) for d in providers.get(module, [])}
                if not dists & required:
                    undeclared.append(f"{name}:{line} imports {module} ({sorted(dists)})")
    assert not undeclared, undeclared


# -- installed in a fresh venv ------------------------------------------------------------


def test_installed_wheel_is_self_contained(fresh_venv: FreshVenv) -> None:
    # Checks the fixture's assumption: trioxide comes from the fresh venv (not the editable
    # install of the main venv, whose .pth is not processed on PYTHONPATH) while its
    # dependencies come from PYTHONPATH.
    for site in main_site_packages():
        assert not (Path(site) / "trioxide").exists(), site
    script = textwrap.dedent(
        """
        import importlib.metadata as md
        import importlib.resources
        import sys

        import trio
        import trioxide
        import trioxide.actors
        import trioxide.runtime.testing._plugin as plugin
        import trioxide.traces

        print("trioxide", trioxide.__file__)
        print("actors", trioxide.actors.__file__)
        print("plugin", plugin.__file__)
        print("trio", trio.__file__)
        viewer = importlib.resources.files("trioxide.traces") / "viewer" / "index.html"
        print("viewer", len(viewer.read_text()))
        print("same", trioxide.Actor is trioxide.runtime.Actor)
        (dist,) = md.distributions(name="trioxide", path=[sys.argv[1]])
        eps = {(ep.group, ep.name): ep.value for ep in dist.entry_points}
        print("pytest11", eps[("pytest11", "trioxide")])
        print("script", eps[("console_scripts", "trioxide")])
        print("stray", sorted(m for m in sys.modules if m.split(".")[0] in
                                   {"runtime", "traces", "actors"}))
        from trioxide.traces import _runs
        print("compiled", _runs.COMPILED, _runs._cruns and _runs._cruns.__file__)
        """
    )
    done = fresh_venv.run(fresh_venv.python, "-c", script, fresh_venv.site_packages)
    assert done.returncode == 0, done.stderr
    out = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    site = str(fresh_venv.site_packages)
    for key in ("trioxide", "actors", "plugin"):
        assert out[key].startswith(site + "/trioxide/"), out
    assert any(out["trio"].startswith(s) for s in main_site_packages()), out
    assert int(out["viewer"]) > 0
    assert out["same"] == "True"
    assert out["pytest11"] == "trioxide.runtime.testing._plugin"
    assert out["script"] == "trioxide.cli:main"
    assert out["stray"] == "[]"
    if cc_available():
        assert out["compiled"].startswith(f"True {site}/trioxide/traces/_cruns."), out


def test_installed_console_script(fresh_venv: FreshVenv) -> None:
    done = fresh_venv.run(fresh_venv.bin / "trioxide", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: trioxide")
    for command in ("demo", "view", "export", "explore"):
        assert command in done.stdout


# -- a user project with its own runtime/, traces/, actors/ --------------------------------

USER_PACKAGE = 'WHO = "user"\nPART = "{name}"\n'

USER_PROGRAM = '''\
"""A user program: its own runtime/traces/actors packages next to trioxide."""

from __future__ import annotations

import sys

import msgspec

import actors
import runtime
import traces
import trioxide
import trioxide.testing
import trioxide.traces


class Get(msgspec.Struct, frozen=True):
    n: int


class Doubler(trioxide.Actor):
    async def handle(self, msg: Get) -> int:
        return msg.n * 2


async def main(tracer: trioxide.traces.Tracer) -> int:
    async with trioxide.open_runtime(tracer=tracer, name="user") as rt:
        ref = await rt.spawn(Doubler, name="doubler")
        reply: int = await ref.ask(Get(21), timeout=1.0)
        probe: trioxide.testing.TestProbe = await trioxide.testing.spawn_probe(rt)
        await probe.ref.tell(Get(1))
        got: Get = await probe.expect(Get, within=1.0)
        assert got == Get(1)
    return reply


def run() -> None:
    sink = trioxide.traces.MemorySink()
    tracer = trioxide.traces.Tracer(sink)
    reply = trioxide.testing.run_seeded(main, tracer, seed=7)
    kinds = sorted({e.kind for e in sink.events})
    print("own", runtime.WHO, traces.WHO, actors.WHO, runtime.PART, traces.PART, actors.PART)
    print("reply", reply)
    print("kinds", *kinds)
    print("trioxide", trioxide.__file__)
    print("runtime", runtime.__file__)
    print("distinct", trioxide.runtime is not sys.modules["runtime"])


if __name__ == "__main__":
    run()
'''

# A user's test, run by pytest in the fresh venv: the ``pytest11`` plugin of the wheel
# provides the ``probe`` fixture (and its seeded, virtual-time runner).
USER_TEST = '''\
import sys

import msgspec

import runtime


class Ping(msgspec.Struct, frozen=True):
    n: int


async def test_with_the_plugin_fixtures(probe, trioxide_seed):
    p = await probe("p")
    await p.ref.tell(Ping(1))
    assert await p.expect(Ping, within=5.0) == Ping(1)
    assert runtime.WHO == "user"
    print("PLUGIN", sys.modules["trioxide.runtime.testing._plugin"].__file__)
    print("SEED", trioxide_seed)
'''

# Must fail mypy on exactly the marked line once ``ActorRef`` carries the reply type.
TYPED_ASK = '''\
from __future__ import annotations

import msgspec

import trioxide


class Get(msgspec.Struct, frozen=True):
    pass


class Counter(trioxide.Actor):
    async def handle(self, msg: Get) -> int:
        return 1


async def wrong() -> str:
    async with trioxide.open_runtime() as rt:
        ref = await rt.spawn(Counter)
        x: str = await ref.ask(Get())  # WRONG
        return x
'''


@pytest.fixture
def userproj(tmp_path: Path) -> Path:
    proj = tmp_path / "userproj"
    for name in SUBPACKAGES:
        (proj / name).mkdir(parents=True)
        (proj / name / "__init__.py").write_text(USER_PACKAGE.format(name=name))
    (proj / "app.py").write_text(USER_PROGRAM)
    (proj / "typed_ask.py").write_text(TYPED_ASK)
    (proj / "test_user.py").write_text(USER_TEST)
    # An explicit config, so mypy reads no configuration from outside the project.
    (proj / "mypy.ini").write_text("[mypy]\nstrict = True\n")
    return proj


@pytest.fixture(scope="session")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy_cache")


def run_mypy(fresh_venv: FreshVenv, proj: Path, cache: Path, *files: str) -> tuple[int, str]:
    done = fresh_venv.run(
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        "mypy.ini",
        "--strict",
        "--python-executable",
        fresh_venv.python,
        "--cache-dir",
        cache,
        "--no-error-summary",
        "--show-error-codes",
        "--hide-error-context",
        *files,
        cwd=proj,
        timeout=240,
    )
    return done.returncode, done.stdout + done.stderr


def test_user_program_runs_with_its_own_packages(fresh_venv: FreshVenv, userproj: Path) -> None:
    done = fresh_venv.run(fresh_venv.python, "app.py", cwd=userproj)
    assert done.returncode == 0, done.stderr
    out = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert out["own"] == "user user user runtime traces actors"
    assert out["reply"] == "42"
    assert {"spawn", "send", "receive", "handle", "reply"} <= set(out["kinds"].split())
    assert out["trioxide"].startswith(f"{fresh_venv.site_packages}/trioxide/")
    assert out["runtime"] == str(userproj / "runtime" / "__init__.py")
    assert out["distinct"] == "True"


def test_user_tests_get_the_pytest_plugin(fresh_venv: FreshVenv, userproj: Path) -> None:
    done = fresh_venv.run(
        fresh_venv.python,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "-s",
        "--trioxide-seed=5",
        "test_user.py",
        cwd=userproj,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    plugin = re.search(r"PLUGIN (\S+)", done.stdout)
    seed = re.search(r"SEED (\d+)", done.stdout)
    assert plugin and seed, done.stdout
    assert plugin[1].startswith(f"{fresh_venv.site_packages}/trioxide/"), plugin[1]
    assert seed[1] == "5"


def test_user_program_passes_mypy_strict(
    fresh_venv: FreshVenv, userproj: Path, mypy_cache: Path
) -> None:
    rc, out = run_mypy(fresh_venv, userproj, mypy_cache, "app.py", "-v")
    errors = [line for line in out.splitlines() if ": error:" in line or ": note:" in line]
    assert rc == 0, "\n".join(errors) or out[-3000:]
    assert "py.typed" not in "\n".join(errors) and "library stubs" not in "\n".join(errors)
    # mypy analysed the installed package (found through the fresh venv), not the sources.
    assert f"{fresh_venv.site_packages}/trioxide/__init__.py" in out
    assert "/src/trioxide/" not in out


def test_ask_reply_type_is_checked(
    fresh_venv: FreshVenv, userproj: Path, mypy_cache: Path
) -> None:
    rc, out = run_mypy(fresh_venv, userproj, mypy_cache, "typed_ask.py")
    wrong_line = TYPED_ASK.splitlines().index(
        "        x: str = await ref.ask(Get())  # WRONG"
    ) + 1
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert rc == 1, out
    assert len(errors) == 1, out
    assert errors[0].startswith(f"typed_ask.py:{wrong_line}: error:"), out
    assert '"int"' in errors[0] and '"str"' in errors[0] and "[assignment]" in errors[0], out
