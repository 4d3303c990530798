"""The one errno-to-message path of the CLI (cli/errors.py os_error) and
the one knob writer (ksm/sysfs.py apply_knobs) whose KnobError it reports."""
import errno

import pytest

from ksm_engine import Machine
from ksm_engine.cli.errors import EXIT_FAILURE, EXIT_USAGE, os_error
from ksm_engine.errors import errno_name
from ksm_engine.ksm.sysfs import KnobError, apply_knobs


@pytest.mark.parametrize("knobs,code,words", [
    ({"bogus": "1"}, errno.ENOENT, ["unknown knob 'bogus'", "pages_to_scan"]),
    ({"max_page_sharing": "1"}, errno.EINVAL, ["max_page_sharing='1'", "(EINVAL)"]),
    ({"max_page_sharing": "99999999999"}, errno.ERANGE, ["(ERANGE)"]),
    ({"pages_shared": "1"}, errno.EACCES, ["pages_shared='1'", "(EACCES)"]),
])
def test_apply_knobs_names_the_knob_refused(knobs, code, words):
    m = Machine(ram="8MiB")
    with pytest.raises(KnobError) as e:
        apply_knobs(m, dict({"pages_to_scan": "7"}, **knobs))
    assert e.value.errno == code and e.value.knob == next(iter(knobs))
    assert m.ksm.knobs["pages_to_scan"] == 7          # the knobs before it stay written
    err = os_error(e.value)
    assert err.exit_code == EXIT_USAGE and err.message.startswith("--set: ")
    for w in words:
        assert w in err.message and w in str(e.value)


def test_other_os_errors_are_runtime_failures_with_the_kernels_errno_name():
    err = os_error(FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/y"), "--plot")
    assert (err.exit_code, err.message) == (EXIT_FAILURE, "--plot: /x/y: No such file or directory (ENOENT)")
    err = os_error(OSError(errno.EOPNOTSUPP, "Operation not supported"), "cmm: driver failed to load")
    assert err.message == "cmm: driver failed to load: Operation not supported (EOPNOTSUPP)"
    assert os_error(OSError(errno.EIO, "I/O error"), exit_code=EXIT_USAGE).exit_code == EXIT_USAGE


def test_errno_names_are_the_kernels():
    assert [errno_name(c) for c in (errno.EAGAIN, errno.EDEADLK, errno.EOPNOTSUPP, errno.EINVAL)] == [
        "EAGAIN", "EDEADLK", "EOPNOTSUPP", "EINVAL"]
    assert errno_name(9999) == "9999"
