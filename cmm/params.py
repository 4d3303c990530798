"""The module parameters, /sys/module/cmm/parameters/.

cmm.c declares (module_param_named / module_param_call):

  name           type   mode  default  variable
  delay          uint   0644  1        delay           seconds between polls
  hotplug_delay  uint   0644  5        hotplug_delay   pause after a hotplug
  oom_kb         uint   0644  1024     oom_kb          KiB freed per OOM call
  min_mem_mb     ulong  0644  256      min_mem_mb      memory never ballooned
  debug          uint   0644  0        cmm_debug       log with cmm_dbg()
  simulate       bool   0444  N        simulate        no hcalls (load time only)
  disable        uint   0644  0        cmm_disabled    set through cmm_set_disable()

ParamSpec describes one parameter; ModuleParams is the directory: dict-like
for reading (``drv.params["delay"]`` -> "1\\n", as the file reads; bools
read "Y\\n"/"N\\n"), ``write(name, value)`` for writing.  Parsing is the
kernel's: param_set_uint/ulong use kstrtouint/kstrtoul (base 0, one trailing
newline; junk -> EINVAL, too large -> ERANGE); disable uses cmm_set_disable()
(simple_strtoul, then only 0 or 1, else EINVAL); simulate has no write bit
once loaded (EACCES).  Module parameters check no capability.

load_value() validates the values given to CmmDriver(...) as insmod
arguments, with the same rules (a str is parsed as the kernel would; an int
must fit the type).
"""
import errno
import os

from ksm_engine.kstrtox import UINT_MAX, ULONG_MAX, kstrtobool, kstrtoul, kstrtouint
from ksm_engine.validate import is_int


class ParamSpec:
    """One module parameter: name, type ("uint", "ulong", "bool"), mode,
    default, and the driver attribute holding its value."""

    def __init__(self, name, ptype, mode, default, attr):
        self.name = name
        self.ptype = ptype
        self.mode = mode
        self.default = default
        self.attr = attr


PARAMS = {p.name: p for p in (
    ParamSpec("delay", "uint", 0o644, 1, "delay"),
    ParamSpec("hotplug_delay", "uint", 0o644, 5, "hotplug_delay"),
    ParamSpec("oom_kb", "uint", 0o644, 1024, "oom_kb"),
    ParamSpec("min_mem_mb", "ulong", 0o644, 256, "min_mem_mb"),
    ParamSpec("debug", "uint", 0o644, 0, "cmm_debug"),
    ParamSpec("simulate", "bool", 0o444, False, "simulate"),
    ParamSpec("disable", "uint", 0o644, 0, "cmm_disabled"),
)}


def parse(spec, text):
    """param_set_*(): the value ``text`` sets, or OSError(EINVAL/ERANGE)."""
    if spec.ptype == "uint":
        return kstrtouint(text, 0)
    if spec.ptype == "ulong":
        return kstrtoul(text, 0)
    return kstrtobool(text)


def load_value(spec, value):
    """Validate a load-time value (str as the kernel parses it, or a
    Python int/bool).  Raises OSError(EINVAL/ERANGE)."""
    if isinstance(value, str):
        return parse(spec, value)
    if spec.ptype == "bool":
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise OSError(errno.EINVAL, f"{spec.name}: not a bool")
    if not is_int(value):
        raise OSError(errno.EINVAL, f"{spec.name}: not an integer")
    if value < 0:
        raise OSError(errno.EINVAL, f"{spec.name}: negative")
    if value > (UINT_MAX if spec.ptype == "uint" else ULONG_MAX):
        raise OSError(errno.ERANGE, f"{spec.name}: out of range")
    return value


def show(spec, value):
    """param_get_*(): the text a read of the parameter file gives."""
    if spec.ptype == "bool":
        return "Y\n" if value else "N\n"
    return "%d\n" % value


class ModuleParams:
    """/sys/module/cmm/parameters of one driver (see module comment)."""

    path = "/sys/module/cmm/parameters"

    def __init__(self, drv):
        self._drv = drv

    def _spec(self, name):
        if name not in PARAMS or not self._drv.loaded:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), name)
        return PARAMS[name]

    def __getitem__(self, name):
        spec = self._spec(name)
        return show(spec, getattr(self._drv, spec.attr))

    def __contains__(self, name):
        return name in PARAMS and self._drv.loaded

    def __iter__(self):
        return iter(PARAMS if self._drv.loaded else ())

    def keys(self):
        return list(self)

    def mode(self, name):
        return self._spec(name).mode

    def write(self, name, value, admin=True):
        """Write ``value`` (str; an int is written as its decimal text) to
        the parameter file.  Returns the bytes consumed."""
        spec = self._spec(name)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise TypeError("parameter writes take a str")
        if not spec.mode & 0o222:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), name)
        if name == "disable":
            rc = self._drv.cmm_set_disable(value)
            if rc:
                raise OSError(-rc, os.strerror(-rc), name)
            return len(value)
        setattr(self._drv, spec.attr, parse(spec, value))
        return len(value)

    def __setitem__(self, name, value):
        self.write(name, value)
