"""`ksm-engine estimate --core` on core files written here (tests/cli/
elfcore.py): which segments count, the estimate against the engine's own
scan of the same bytes, and files that are not usable cores."""
import json
import os
import random
import sys

import pytest

from . import elfcore
from .conftest import PAGE, assert_usage_error, run_cli
from .engine_check import assert_run_matches, engine_truth

rng = random.Random(3)
X, Y = rng.randbytes(PAGE), rng.randbytes(PAGE)
UNIQUE = rng.randbytes(4 * PAGE)
HOLES = (16, 17, 18)                   # pages of ANON left unwritten
# An anonymous rw segment: 8 x X, 4 zero pages, 4 unique, 3 never-dumped pages.
ANON = X * 8 + bytes(4 * PAGE) + UNIQUE + bytes(3 * PAGE)
RO = Y * 2 + X * 2                      # an anonymous read-only segment
FILE = X * 4                            # a private file mapping's dumped pages
VDSO = X * 2


def segments():
    return [
        elfcore.Segment(0x400000, FILE, elfcore.PF_R | elfcore.PF_X),
        elfcore.Segment(0x600000, b"", memsz=4 * PAGE),       # not dumped
        elfcore.Segment(0x10000000, ANON, holes=HOLES),
        elfcore.Segment(0x20000000, RO, elfcore.PF_R),
        elfcore.Segment(0x30000000, Y * 3, 0),                   # PROT_NONE
        elfcore.Segment(0x7FFF0000, VDSO, elfcore.PF_R | elfcore.PF_X),
        elfcore.Segment(0xFFFFFFFFFF600000, X, elfcore.PF_R | elfcore.PF_X),  # vsyscall
    ]


def write(path, **kw):
    kw.setdefault("files", [(0x400000, 0x404000, "/usr/bin/prog")])
    kw.setdefault("vdso", 0x7FFF0000)
    return elfcore.write_core(str(path), kw.pop("segs", None) or segments(), **kw)


def holes_supported(path, offset):
    with open(path, "rb") as f:
        try:
            return os.lseek(f.fileno(), offset + HOLES[0] * PAGE, os.SEEK_DATA) > offset + HOLES[0] * PAGE
        except OSError:
            return False


def estimate_json(*args):
    r = run_cli("estimate", *args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_core_counts_only_anonymous_dumped_pages(tmp_path):
    path = tmp_path / "core"
    offsets = write(path)
    sparse = holes_supported(path, offsets[2])
    anon = ANON[:HOLES[0] * PAGE] if sparse else ANON
    zeros = 4 if sparse else 7
    for engine in ((), ("--engine",)):
        doc = estimate_json("--core", path, "--core-zero-pages", *engine)
        src = doc["sources"][0]
        assert src["kind"] == "core" and src["name"] == str(path)
        assert src["segments"] == 7
        assert src["file_backed_pages"] == 4
        assert src["special_pages"] == 2 + 1 + 3     # vdso, vsyscall, unreadable
        assert src["hole_pages"] == (3 if sparse else 0)
        assert src["pages"] == len(anon) // PAGE + 4
        r0, r1 = doc["runs"]
        assert doc["zero_pages"] == zeros and doc["zero_pages_left_out"] == 0
        assert doc["answered_by"] == ("engine" if engine else "counts")
        assert doc["engine_agrees"] is (True if engine else None)
        assert (r0["pages_shared"], r0["pages_sharing"]) == (3, 9 + (zeros - 1) + 1)
        assert (r1["pages_shared"], r1["pages_sharing"], r1["ksm_zero_pages"]) == (2, 9 + 1, zeros)
        assert r0["pages_unshared"] == 4
        for run in doc["runs"]:
            truth = engine_truth([anon + RO], use_zero_pages=run["use_zero_pages"])
            assert_run_matches(run, truth, 100, 20)


def test_core_zero_pages_are_left_out_by_default(tmp_path):
    """All-zero core pages may be untouched memory: apart, on their own line."""
    path = tmp_path / "core"
    offsets = write(path)
    zeros = 4 if holes_supported(path, offsets[2]) else 7
    doc = estimate_json("--core", path)
    src = doc["sources"][0]
    assert src["zero_pages_left_out"] == zeros == doc["zero_pages_left_out"]
    assert doc["zero_pages"] == 0
    nonzero = X * 8 + UNIQUE + RO
    assert src["pages"] == len(nonzero) // PAGE
    for run in doc["runs"]:
        truth = engine_truth([nonzero], use_zero_pages=run["use_zero_pages"])
        assert_run_matches(run, truth, 100, 20)
    text = run_cli("estimate", "--core", path).stdout
    assert f"all-zero core pages left out (maybe never touched; --core-zero-pages counts them): " \
        f"{zeros} " in text


def test_core_and_image_side_by_side(tmp_path):
    core = tmp_path / "core"
    write(core)
    img = tmp_path / "ro.img"
    img.write_bytes(RO)
    doc = estimate_json("--core", core, "--image", img)
    assert [s["kind"] for s in doc["sources"]] == ["core", "image"]
    assert doc["runs"][0]["per_process"][1]["ksm_merging_pages"] == 4


def test_text_report_notes(tmp_path):
    path = tmp_path / "core"
    write(path)
    r = run_cli("estimate", "--core", path)
    assert r.returncode == 0, r.stderr
    assert "7 segments" in r.stdout and "4 file-backed pages left out" in r.stdout


@pytest.mark.parametrize("make,needle", [
    (lambda d: d / "missing", "no such file"),
    (lambda d: d, "is a directory"),
    (lambda d: _file(d / "empty", b""), "empty file"),
    (lambda d: _file(d / "text", b"this is not an ELF file\n" * 100), "not an ELF core file"),
    (lambda d: _file(d / "short", b"\x7fELF\x02\x01\x01"), "not an ELF core file"),
])
def test_not_a_core_file(tmp_path, make, needle):
    path = make(tmp_path)
    assert_usage_error(run_cli("estimate", "--core", path), str(path), needle)


def _file(path, data):
    path.write_bytes(data)
    return path


def test_an_executable_is_not_a_core(tmp_path):
    exe = os.path.realpath(sys.executable)
    r = run_cli("estimate", "--core", exe)
    assert_usage_error(r, exe, "an ELF file of type ET_", "not a core file")
    path = tmp_path / "exec"
    write(path, etype=elfcore.ET_EXEC)
    assert_usage_error(run_cli("estimate", "--core", path), "type ET_EXEC, not a core file")


def test_truncated_core(tmp_path):
    path = tmp_path / "core"
    write(path, cut=PAGE)
    assert_usage_error(run_cli("estimate", "--core", path), "truncated core file",
                       "ends at byte")


def test_core_without_anonymous_memory(tmp_path):
    path = tmp_path / "core"
    write(path, segs=[elfcore.Segment(0x400000, FILE, elfcore.PF_R)])
    assert_usage_error(run_cli("estimate", "--core", path), "holds no anonymous memory")
