"""Every /sys/kernel/mm/ksm knob: defaults, parsing, errno, and effects.

The parsing rules (ksm_engine/ksm/sysfs.py, measured on the real kernel
by tests/kernel/test_knob_parsing.py) per store function:
  kstrtouint, every error EINVAL: pages_to_scan, sleep_millisecs, run,
      stable_node_chains_prune_millisecs
  kstrtoul, every error EINVAL: advisor_max_cpu, advisor_min_pages_to_scan,
      advisor_max_pages_to_scan, advisor_target_scan_time
  kstrtoint, its error passed through (ERANGE on overflow): max_page_sharing
  kstrtoul, its error passed through: merge_across_nodes
  kstrtobool (EINVAL): use_zero_pages, smart_scan
  sysfs_streq: advisor_mode
Base 10 only ("0x10" is "0" followed by garbage), one optional leading '+',
one optional trailing newline, nothing else (no spaces).  A write of no
bytes never reaches the store function.  Counters are read-only (EACCES),
unknown names do not exist (ENOENT).  A rejected write changes nothing.

The scan-time advisor (mm/ksm.c scan_time_advisor) is checked on numbers
worked out by hand from the kernel's integer formula.
"""
import errno

import pytest

from ksm_engine import Machine
from ksm_engine.ksm.advisor import ScanTimeAdvisor

from .conftest import map_pages, page, sysfs_store

DEFAULTS = {
    "pages_to_scan": "100", "sleep_millisecs": "20", "run": "0", "max_page_sharing": "256",
    "merge_across_nodes": "1", "use_zero_pages": "0", "smart_scan": "1",
    "stable_node_chains_prune_millisecs": "2000", "advisor_mode": "[none] scan-time",
    "advisor_max_cpu": "70", "advisor_min_pages_to_scan": "500", "advisor_max_pages_to_scan": "30000",
    "advisor_target_scan_time": "200",
}
COUNTERS = ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile", "pages_scanned",
            "pages_skipped", "full_scans", "stable_node_chains", "stable_node_dups", "ksm_zero_pages",
            "general_profit")

UINT_EINVAL = ("pages_to_scan", "sleep_millisecs", "stable_node_chains_prune_millisecs")
ULONG_EINVAL = ("advisor_max_cpu", "advisor_min_pages_to_scan", "advisor_max_pages_to_scan",
                "advisor_target_scan_time")
BOOLS = ("use_zero_pages", "smart_scan")

# text -> expected: an int (accepted, read back as that) or an errno
COMMON_BAD = {
    "abc": errno.EINVAL, "-1": errno.EINVAL, " 5": errno.EINVAL, "5 ": errno.EINVAL,
    "0x10": errno.EINVAL, "5\n\n": errno.EINVAL, "\n": errno.EINVAL, "1e3": errno.EINVAL,
    "5ms": errno.EINVAL, "+": errno.EINVAL, "++5": errno.EINVAL, "-0": errno.EINVAL,
    "\n5": errno.EINVAL, "\x005": errno.EINVAL, "٣": errno.EINVAL,
}
UINT_CASES = {**COMMON_BAD, "7": 7, "+7": 7, "7\n": 7, "007": 7, "0": 0,
              "4294967295": 4294967295, "4294967296": errno.EINVAL,
              "99999999999999999999999": errno.EINVAL}
ULONG_CASES = {**COMMON_BAD, "7": 7, "+7": 7, "7\n": 7,
               "18446744073709551615": 18446744073709551615,
               "18446744073709551616": errno.EINVAL, "4294967296": 4294967296}


def check_store(m, name, text, want, accepted):
    """Writing ``text``: reads back str(want) when text is one of
    ``accepted``, else fails with errno ``want`` and leaves the value."""
    before = m.ksm.sysfs[name]
    got = sysfs_store(m, name, text)
    if text in accepted:
        assert got == str(want)
    else:
        assert got == want
        assert m.ksm.sysfs[name] == before


@pytest.fixture
def m():
    return Machine(ram="16MiB")


def test_defaults_as_read(m):
    assert {k: m.ksm.sysfs[k] for k in DEFAULTS} == {k: v + "\n" for k, v in DEFAULTS.items()}
    assert sorted(m.ksm.sysfs) == sorted(list(DEFAULTS) + list(COUNTERS))
    assert len(m.ksm.sysfs) == len(DEFAULTS) + len(COUNTERS)
    for name in COUNTERS:
        assert m.ksm.sysfs[name] == "0\n"


@pytest.mark.parametrize("name", UINT_EINVAL)
@pytest.mark.parametrize("text", sorted(UINT_CASES))
def test_uint_knobs(m, name, text):
    check_store(m, name, text, UINT_CASES[text], ("7", "+7", "7\n", "007", "0", "4294967295"))


@pytest.mark.parametrize("name", ULONG_EINVAL)
@pytest.mark.parametrize("text", sorted(ULONG_CASES))
def test_ulong_einval_knobs(m, name, text):
    check_store(m, name, text, ULONG_CASES[text], ("7", "+7", "7\n", "18446744073709551615", "4294967296"))


def test_advisor_target_scan_time_at_least_1(m):
    assert sysfs_store(m, "advisor_target_scan_time", "0") == errno.EINVAL
    assert m.ksm.sysfs["advisor_target_scan_time"] == "200\n"
    assert sysfs_store(m, "advisor_target_scan_time", "1") == "1"


@pytest.mark.parametrize("text,want", [
    ("0", "0"), ("1", "1"), ("2", "2"), ("+1", "1"), ("2\n", "2"),
    ("3", errno.EINVAL), ("4294967295", errno.EINVAL), ("4294967296", errno.EINVAL),
    ("-1", errno.EINVAL), ("1x", errno.EINVAL), ("", "0"), (" 1", errno.EINVAL),
])
def test_run_values(m, text, want):
    assert sysfs_store(m, "run", text) == want


@pytest.mark.parametrize("text,want", [
    ("2", "2"), ("+3", "3"), ("2147483647", "2147483647"), ("1", errno.EINVAL), ("0", errno.EINVAL),
    ("-5", errno.EINVAL), ("-2147483648", errno.EINVAL), ("2147483648", errno.ERANGE),
    ("99999999999", errno.ERANGE), ("-2147483649", errno.ERANGE), ("abc", errno.EINVAL),
    ("0x10", errno.EINVAL), (" 3", errno.EINVAL), ("3\n", "3"), ("3\n\n", errno.EINVAL),
    ("-", errno.EINVAL), ("", "256"),
])
def test_max_page_sharing_values(m, text, want):
    assert sysfs_store(m, "max_page_sharing", text) == want
    if not isinstance(want, str):
        assert m.ksm.sysfs["max_page_sharing"] == "256\n"


@pytest.mark.parametrize("text,want", [
    ("0", "0"), ("1", "1"), ("+0", "0"), ("1\n", "1"), ("2", errno.EINVAL), ("-1", errno.EINVAL),
    ("99999999999999999999", errno.ERANGE), ("18446744073709551616", errno.ERANGE),
    ("18446744073709551615", errno.EINVAL), ("x", errno.EINVAL), ("", "1"),
])
def test_merge_across_nodes_values(m, text, want):
    assert sysfs_store(m, "merge_across_nodes", text) == want


@pytest.mark.parametrize("name", BOOLS)
@pytest.mark.parametrize("text,want", [
    ("1", "1"), ("0", "0"), ("y", "1"), ("Y", "1"), ("yes", "1"), ("n", "0"), ("N", "0"), ("no", "0"),
    ("nope", "0"), ("t", "1"), ("true", "1"), ("f", "0"), ("false", "0"), ("on", "1"), ("oN", "1"),
    ("ON\n", "1"), ("off", "0"), ("Of", "0"), ("1abc", "1"), ("0\n\n", "0"),
    ("o", errno.EINVAL), ("2", errno.EINVAL), ("x", errno.EINVAL), ("-1", errno.EINVAL),
    (" 1", errno.EINVAL), ("\n", errno.EINVAL), ("ox", errno.EINVAL),
])
def test_bool_knobs(m, name, text, want):
    m.ksm.sysfs[name] = "0" if want == "1" else "1"    # start from the other value
    before = m.ksm.sysfs[name]
    got = sysfs_store(m, name, text)
    assert got == want
    if not isinstance(want, str):
        assert m.ksm.sysfs[name] == before


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_empty_write_is_a_noop(m, name):
    before = m.ksm.sysfs[name]
    m.ksm.sysfs[name] = ""
    m.ksm.sysfs[name] = b""
    assert m.ksm.sysfs[name] == before


def test_text_ends_at_a_nul(m):
    # kernfs hands the store function a C string: a NUL ends the text
    m.ksm.sysfs["pages_to_scan"] = "5\x00garbage"
    assert m.ksm.sysfs["pages_to_scan"] == "5\n"
    m.ksm.sysfs["smart_scan"] = b"0\x00"
    assert m.ksm.sysfs["smart_scan"] == "0\n"
    m.ksm.sysfs["advisor_mode"] = "scan-time\x00\n"
    assert m.ksm.sysfs["advisor_mode"] == "none [scan-time]\n"
    with pytest.raises(OSError) as e:              # nothing before the NUL
        m.ksm.sysfs["sleep_millisecs"] = "\x0020"
    assert e.value.errno == errno.EINVAL
    assert m.ksm.sysfs["sleep_millisecs"] == "20\n"


def test_value_types(m):
    m.ksm.sysfs["pages_to_scan"] = 77            # an int is its decimal text
    assert m.ksm.sysfs["pages_to_scan"] == "77\n"
    m.ksm.sysfs["pages_to_scan"] = b"78\n"
    assert m.ksm.sysfs["pages_to_scan"] == "78\n"
    m.ksm.sysfs["pages_to_scan"] = bytearray(b"79")
    assert m.ksm.sysfs["pages_to_scan"] == "79\n"
    with pytest.raises(OSError) as e:
        m.ksm.sysfs["pages_to_scan"] = -5
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        m.ksm.sysfs["pages_to_scan"] = b"\xff\xfe"
    assert e.value.errno == errno.EINVAL
    for bad in (True, None, 1.5, ["1"]):
        with pytest.raises(TypeError):
            m.ksm.sysfs["pages_to_scan"] = bad
    assert m.ksm.sysfs["pages_to_scan"] == "79\n"


@pytest.mark.parametrize("name", COUNTERS)
def test_counters_are_read_only(m, name):
    with pytest.raises(PermissionError) as e:
        m.ksm.sysfs[name] = "1"
    assert e.value.errno == errno.EACCES
    assert m.ksm.sysfs[name] == "0\n"


def test_unknown_attributes(m):
    for name in ("max_kernel_pages", "kernel_pages_allocated", "nonsense", "run\n", ""):
        with pytest.raises(FileNotFoundError) as e:
            m.ksm.sysfs[name]
        assert e.value.errno == errno.ENOENT
        with pytest.raises(FileNotFoundError):
            m.ksm.sysfs[name] = "1"
        assert name not in m.ksm.sysfs
    assert m.ksm.sysfs.get("nonsense") is None
    with pytest.raises(TypeError):
        m.ksm.sysfs[3]


def test_rejected_writes_leave_every_knob_unchanged(m):
    values = {"pages_to_scan": "1234", "sleep_millisecs": "5", "max_page_sharing": "17",
              "merge_across_nodes": "0", "use_zero_pages": "1", "smart_scan": "0",
              "stable_node_chains_prune_millisecs": "99", "advisor_max_cpu": "33",
              "advisor_min_pages_to_scan": "44", "advisor_max_pages_to_scan": "55555",
              "advisor_target_scan_time": "66", "run": "1"}
    for k, v in values.items():
        m.ksm.sysfs[k] = v
    snapshot = dict(m.ksm.sysfs)
    for k in values:
        # kstrtobool only reads the first characters: "0x10" is "0" to it
        bads = ("garbage", "-7", "2", " 1", "ox") if k in BOOLS else (
            "garbage", "-7", "99999999999999999999999", " 1", "0x10", "1 2")
        for bad in bads:
            with pytest.raises(OSError):
                m.ksm.sysfs[k] = bad
    assert dict(m.ksm.sysfs) == snapshot


# --- advisor_mode ----------------------------------------------------------------


def test_advisor_mode_format_and_switch(m):
    assert m.ksm.sysfs["advisor_mode"] == "[none] scan-time\n"
    m.ksm.sysfs["pages_to_scan"] = "1234"
    m.ksm.sysfs["advisor_mode"] = "scan-time"
    assert m.ksm.sysfs["advisor_mode"] == "none [scan-time]\n"
    # switching on sets pages_to_scan to advisor_min_pages_to_scan
    assert m.ksm.sysfs["pages_to_scan"] == "500\n"
    for text in ("1000", "500", "0", "abc"):
        with pytest.raises(OSError) as e:
            m.ksm.sysfs["pages_to_scan"] = text
        assert e.value.errno == errno.EINVAL
    assert m.ksm.sysfs["pages_to_scan"] == "500\n"
    m.ksm.sysfs["advisor_mode"] = "scan-time\n"         # same mode: nothing resets
    assert m.ksm.sysfs["pages_to_scan"] == "500\n"
    m.ksm.sysfs["advisor_mode"] = "none\n"
    assert m.ksm.sysfs["advisor_mode"] == "[none] scan-time\n"
    # switching off resets pages_to_scan to the default, not the old value
    assert m.ksm.sysfs["pages_to_scan"] == "100\n"
    m.ksm.sysfs["pages_to_scan"] = "1000"
    assert m.ksm.sysfs["pages_to_scan"] == "1000\n"


def test_advisor_mode_uses_min_pages_knob(m):
    m.ksm.sysfs["advisor_min_pages_to_scan"] = "777"
    m.ksm.sysfs["advisor_mode"] = "scan-time"
    assert m.ksm.sysfs["pages_to_scan"] == "777\n"


@pytest.mark.parametrize("text", ["bogus", " none", "none ", "None", "scan-time\n\n", "scan", "[none] scan-time", "\n"])
def test_advisor_mode_rejects(m, text):
    with pytest.raises(OSError) as e:
        m.ksm.sysfs["advisor_mode"] = text
    assert e.value.errno == errno.EINVAL
    assert m.ksm.sysfs["advisor_mode"] == "[none] scan-time\n"


# --- the scan-time advisor's arithmetic ----------------------------------------------


def test_advisor_first_scan_by_hand():
    # scan 0 -> 5000 ms: scan_time 5 s; cpu 2500 ms: cpu% = 2500*100/5000 = 50
    # no previous scan: last = 5; factor = 200*100/5 = 4000
    # change = 5*100/5 = 100, ewma(0, 100) = 30
    # pages = 500*100/4000 = 12; 12*30/100 = 3
    # per_page_cost = 500/50 = 10; min(3, 700) = 3; max(3, 100) = 100
    adv = ScanTimeAdvisor()
    adv.start_scan(0, 0)
    assert adv.stop_scan(5000, 2_500_000_000, 500, 200, 70, 30000) == 100
    assert (adv.scan_time, adv.change, adv.cpu_ns) == (5, 30, 2_500_000_000)


def test_advisor_second_scan_by_hand():
    adv = ScanTimeAdvisor()
    adv.start_scan(0, 0)
    adv.stop_scan(5000, 2_500_000_000, 500, 200, 70, 30000)
    # scan 10 s -> 410 s: scan_time 400; cpu 4000 ms: 400000/400000 = 1 %
    # factor = 200*100/400 = 50; change = 400*100/5 = 8000
    # ewma(30, 8000) = (70*30 + 30*8000)/100 = 2421
    # pages = 100*100/50 = 200; 200*2421/100 = 4842
    # per_page_cost = 100/1 = 100: min(4842, 7000), max(.., 1000), min(.., 30000)
    adv.start_scan(10_000, 2_500_000_000)
    assert adv.stop_scan(410_000, 6_500_000_000, 100, 200, 70, 30000) == 4842
    assert adv.change == 2421


@pytest.mark.parametrize("max_cpu,max_pages,want", [(70, 30000, 4842), (40, 30000, 4000), (70, 3000, 3000)])
def test_advisor_caps(max_cpu, max_pages, want):
    adv = ScanTimeAdvisor()
    adv.start_scan(0, 0)
    adv.stop_scan(5000, 2_500_000_000, 500, 200, 70, 30000)
    adv.start_scan(10_000, 2_500_000_000)
    assert adv.stop_scan(410_000, 6_500_000_000, 100, 200, max_cpu, max_pages) == want


def test_advisor_short_scan_counts_as_one_second():
    # 999 ms -> scan_time 1; cpu 0 ms -> cpu% 1; factor 20000; change 100 -> 30
    # pages = 1000*100/20000 = 5; 5*30/100 = 1; per_page_cost 1000
    # min(1, 70000) = 1; max(1, 10000) = 10000; min(10000, 30000)
    adv = ScanTimeAdvisor()
    adv.start_scan(1_000, 0)
    assert adv.stop_scan(1_999, 0, 1000, 200, 70, 30000) == 10000
    assert adv.scan_time == 1


def test_advisor_through_the_scanner():
    now = [0]
    m = Machine(ram="16MiB", clock=lambda: now[0])
    p = m.spawn()
    map_pages(p, [page(i) for i in range(8)])
    m.ksm.sysfs["advisor_mode"] = "scan-time"
    assert m.ksm.sysfs["pages_to_scan"] == "500\n"
    # pass 1 in one batch at time 0: scan_time 1 s; no ksmd CPU time
    # recorded yet: cpu% 1; pages = 500*100/20000*30/100 = 0, raised to
    # per_page_cost*10 = 5000
    m.ksm.full_scan(1)
    assert m.ksm.sysfs["pages_to_scan"] == "5000\n"
    # pass 2 runs from time 0 to 400 s: factor 50, change 400*100/1 =
    # 40000, ewma(30, 40000) = 12021; pages = 5000*100/50*12021/100 =
    # 1202100, capped at 5000*70 = 350000, then at 30000 (cpu% stays 1:
    # the scan took far less than 4 s of CPU)
    m.ksm.scan(1)
    now[0] = 400_000
    m.ksm.full_scan(1)
    assert m.ksm.sysfs["pages_to_scan"] == "30000\n"
    m.ksm.sysfs["advisor_mode"] = "none"
    assert m.ksm.sysfs["pages_to_scan"] == "100\n"
    m.check()
