"""Packaging: the compiled core imports, and a plain non-editable
``pip install .`` builds and works on its own.

The install test copies the source files (``git ls-files``: tracked and
not ignored, so no build products; a plain copy without them when this is
not a git checkout) to a temporary directory, runs ``pip install --no-deps --target DIR`` on that
copy once per session (about a minute: the C core is compiled), and runs
Python in a subprocess whose sys.path starts with DIR, so that it uses the
installed copy and not this editable checkout.
"""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import ksm_engine

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_compiled_core_imports():
    from ksm_engine import _core
    from ksm_engine._native import ffi, lib

    assert _core.lib is lib and _core.ffi is ffi
    assert _core.__file__.endswith(".so")
    assert lib.KE_PAGE_SIZE == 4096
    # the header's functions are all there and callable
    for name in ("ke_machine_new", "ke_mm_write", "ke_mm_read", "ke_mm_fork", "ke_ksm_scan_mm",
                 "ke_checksum_page", "ke_xxh64", "ke_jhash2", "ke_ksm_check"):
        assert callable(getattr(lib, name))
    out = ffi.new("ke_machine **")
    assert lib.ke_machine_new(4, out) == 0
    lib.ke_machine_free(out[0])


def _clean_copy(dst):
    """The source files of this checkout (what a clean clone holds, plus
    files not yet committed, minus what .gitignore names), copied to dst."""
    try:
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               cwd=ROOT, check=True,
                               capture_output=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "*.egg-info", "__pycache__", "*.so", "*.o", "_core.c",
            ".pytest_cache", ".hypothesis", ".benchmarks"))
        return
    for rel in filter(None, files):
        src = os.path.join(ROOT, rel)
        if not os.path.isfile(src):      # deleted in the working tree
            continue
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dst, rel))


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """DIR holding a non-editable install of a clean copy of the project."""
    base = tmp_path_factory.mktemp("pkg")
    src, target = base / "src", base / "target"
    _clean_copy(src)
    assert (src / "pyproject.toml").is_file() and (src / "csrc" / "ksm_engine.h").is_file()
    assert not list((src / "ksm_engine").glob("_core*.so")), "the copy must not hold a built core"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-input",
                        "--disable-pip-version-check", "--target", str(target), str(src)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"pip install failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return target


def _run_installed(target, code):
    """Runs code in a fresh interpreter with ``target`` first on sys.path
    (isolated mode: no PYTHONPATH, no user site, no current directory)."""
    prog = f"import sys; sys.path.insert(0, {str(target)!r})\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-I", "-c", prog], capture_output=True, text=True,
                          cwd=str(target), timeout=300)


def test_plain_install_has_the_packages_and_the_compiled_core(installed):
    assert (installed / "ksm_engine" / "__init__.py").is_file()
    assert (installed / "ksm_engine" / "ksm" / "__init__.py").is_file()
    assert (installed / "ksm_engine" / "cli" / "__init__.py").is_file()
    assert (installed / "cmm" / "__init__.py").is_file()
    assert list((installed / "ksm_engine").glob("_core*.so")), "no compiled core installed"
    assert not (installed / "tests").exists()


def test_plain_install_imports_and_runs_from_its_own_directory(installed):
    r = _run_installed(installed, f"""
        import ksm_engine, ksm_engine._core, cmm
        from ksm_engine import Machine, PAGE_SIZE, MADV_MERGEABLE
        for mod in (ksm_engine, ksm_engine._core, cmm):
            assert mod.__file__.startswith({str(installed)!r}), mod.__file__
        m = Machine(ram="4MiB")
        p = m.spawn()
        a = p.mmap(16 * PAGE_SIZE)
        p.write(a, b"k" * 16 * PAGE_SIZE)
        c = p.fork()
        c.write(a, b"c")
        assert p.read(a, 2) == b"kk" and c.read(a, 2) == b"ck"
        p.madvise(a, 16 * PAGE_SIZE, MADV_MERGEABLE)
        m.ksm.full_scan(2)
        m.check()
        print(m.ksm.stats["pages_shared"], m.ksm.stats["pages_sharing"], ksm_engine.__version__)
    """)
    assert r.returncode == 0, r.stderr
    shared, sharing, version = r.stdout.split()
    assert (int(shared), int(sharing)) == (1, 15)
    assert version == ksm_engine.__version__


def test_plain_install_command_line(installed):
    """The ksm-engine entry point of the installed copy starts (--help)."""
    r = _run_installed(installed, """
        import sys
        from ksm_engine.cli.main import main
        sys.argv = ["ksm-engine", "--help"]
        try:
            main()
        except SystemExit as e:
            sys.exit(e.code)
    """)
    assert r.returncode == 0, r.stderr
    assert "ksm-engine" in r.stdout
    # main() leaves out a command whose module does not import: each must be
    # there (a package missing from pyproject's list would drop its command)
    from ksm_engine.cli.main import COMMANDS
    for name in COMMANDS:
        assert name in r.stdout, name


def test_sdist_carries_the_c_core(tmp_path):
    """An sdist holds every C source and header the build compiles (the
    cffi build reads csrc/ksm_engine.h), so pip can build from it."""
    import tarfile
    src = tmp_path / "src"
    _clean_copy(str(src))
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")],
                   cwd=src, check=True, capture_output=True)
    (tarball,) = (tmp_path / "dist").iterdir()
    with tarfile.open(tarball) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    csrc = {f"csrc/{f}" for f in os.listdir(os.path.join(ROOT, "csrc")) if f.endswith((".c", ".h"))}
    assert csrc and csrc <= names, csrc - names
    assert "ksm_engine/_build_core.py" in names and "setup.py" in names


@pytest.mark.parametrize("opt", ["-O2", "-O1"])
def test_c_core_compiles_without_warnings(tmp_path, opt):
    """The core compiles with -Wall -Wextra and no warning, at the
    normal build's -O2 and the sanitizer build's -O1 (whose flow analysis
    differs); -Werror makes any warning fail the test.  Never skipped: the
    core that every other test runs was built with a C compiler, so there is
    one here (gcc, else the system's cc)."""
    import glob
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc, "no C compiler: the core could not have been built"
    for src in sorted(glob.glob(os.path.join(ROOT, "csrc", "*.c"))):
        r = subprocess.run([cc, "-std=gnu11", "-Wall", "-Wextra", "-Werror", opt, "-c",
                            "-o", str(tmp_path / "x.o"), "-I", os.path.join(ROOT, "csrc"), src],
                           capture_output=True, text=True)
        assert r.returncode == 0, (src, r.stderr)
