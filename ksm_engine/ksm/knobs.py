"""The KSM knobs: defaults, the kernel's validation (errno for errno), and
what a change sets off.

Each knob: name -> (default, parser).  The parser is the kstrto* flavour the
kernel's store function uses (sysfs.py).  Checks beyond parsing, and side
effects, are in Knobs.store():
  run                0, 1 or 2; 2 unmerges everything (ENOMEM leaves run=0)
  pages_to_scan      EINVAL while advisor_mode is not "none"
  max_page_sharing   >= 2; EBUSY while any page is shared
  merge_across_nodes 0 or 1; EBUSY while any page is shared (one node here)
  advisor_mode       "none" or "scan-time"; a change resets pages_to_scan
  advisor_target_scan_time  >= 1
"""
import errno

from .sysfs import PARSERS

KNOBS_6X = {
    "pages_to_scan": (100, "uint_einval"),
    "sleep_millisecs": (20, "uint_einval"),
    "run": (0, "uint_einval"),
    "max_page_sharing": (256, "int"),
    "merge_across_nodes": (1, "ulong"),
    "use_zero_pages": (0, "bool_einval"),
    "smart_scan": (1, "bool_einval"),
    "stable_node_chains_prune_millisecs": (2000, "uint_einval"),
    "advisor_mode": ("none", None),
    "advisor_max_cpu": (70, "ulong_einval"),
    "advisor_min_pages_to_scan": (500, "ulong_einval"),
    "advisor_max_pages_to_scan": (30000, "ulong_einval"),
    "advisor_target_scan_time": (200, "ulong_einval"),
}

KNOBS_2009 = {  # the 2009 patch's stores: strict_strtoul (sysfs.py)
    "pages_to_scan": (100, "strict_uint"),
    "sleep_millisecs": (20, "strict_uint"),
    "run": (0, "strict_uint"),
    "max_kernel_pages": (0, "strict_ulong"),
}

# Knobs the C core reads: a change is handed to it at once.
CORE_KNOBS = {"max_page_sharing", "use_zero_pages", "smart_scan",
              "stable_node_chains_prune_millisecs", "max_kernel_pages"}


class Knobs:
    """The values of one KSM's knobs (``knobs["run"]`` -> int or str)."""

    def __init__(self, ksm):
        self._ksm = ksm
        self._spec = KNOBS_2009 if ksm.compat_2009 else KNOBS_6X
        self._values = {name: default for name, (default, _) in self._spec.items()}

    def names(self):
        return tuple(self._spec)

    def __getitem__(self, name):
        return self._values[name]

    def get(self, name, default=None):
        return self._values.get(name, default)

    def set_raw(self, name, value):
        """Sets a value with no checks (the advisor's pages_to_scan)."""
        self._values[name] = value

    def store(self, name, text):
        """Parses and applies one sysfs write; raises OSError(errno) and
        changes nothing on a bad value.  Caller holds the machine lock."""
        ksm = self._ksm
        if name == "advisor_mode":
            if text in ("none", "none\n"):
                mode = "none"
            elif text in ("scan-time", "scan-time\n"):
                mode = "scan-time"
            else:
                raise OSError(errno.EINVAL, "advisor_mode: 'none' or 'scan-time'")
            if mode != self._values["advisor_mode"]:
                self._values["advisor_mode"] = mode
                ksm.advisor.reset()
                self._values["pages_to_scan"] = (
                    self._values["advisor_min_pages_to_scan"] if mode == "scan-time"
                    else KNOBS_6X["pages_to_scan"][0])
            return
        value = PARSERS[self._spec[name][1]](text)
        if name == "run":
            if value > 2:
                raise OSError(errno.EINVAL, "run: 0, 1 or 2")
            if value == 2 and self._values["run"] != 2:
                self._values["run"] = 2  # new processes go to the tail meanwhile
                try:
                    ksm._unmerge_all()
                except OSError:
                    self._values["run"] = 0
                    raise
            self._values["run"] = value
            return
        if name == "pages_to_scan" and self._values.get("advisor_mode", "none") != "none":
            raise OSError(errno.EINVAL, "pages_to_scan is set by the advisor")
        if name == "max_page_sharing":
            if value < 2:
                raise OSError(errno.EINVAL, "max_page_sharing must be >= 2")
            if value != self._values[name] and self._busy():
                raise OSError(errno.EBUSY, "max_page_sharing: pages are shared")
        if name == "merge_across_nodes":
            if value > 1:
                raise OSError(errno.EINVAL, "merge_across_nodes: 0 or 1")
            if value != self._values[name] and self._busy():
                raise OSError(errno.EBUSY, "merge_across_nodes: pages are shared")
        if name == "advisor_target_scan_time" and value < 1:
            raise OSError(errno.EINVAL, "advisor_target_scan_time must be >= 1")
        if name in ("use_zero_pages", "smart_scan"):
            value = int(value)
        self._values[name] = value
        if name in CORE_KNOBS:
            ksm._apply_config()

    def _busy(self):
        """Pages shared, or KSM pages left that could not be removed."""
        s = self._ksm._raw()
        return bool(s.pages_shared or s.ksm_pages)
