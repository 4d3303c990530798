"""The cmm device's sysfs files, /sys/devices/system/cmm/cmm0/.

Data structures
---------------
DeviceAttribute   one file: name, mode, show() -> str and store(buf, admin)
                  -> bytes consumed or a negative errno (a DEVICE_ATTR).
CmmSysfs          the directory.  It is dict-like for reading:
                  ``drv.sysfs["loaned_kb"]`` is the text a read(2) of the file
                  returns ("4096\\n"); writing goes through
                  ``write(name, value, admin=...)``.  ``admin`` is the
                  writer's CAP_SYS_ADMIN; the writer is assumed to pass the
                  file's permission check whenever the mode has a write bit
                  (root-owned 0644 file, uid 0 writer), so the capability
                  check inside store_oom_pages() is what decides.

Files (cmm.c):
  loaned_kb                0444  PAGES2KB(loaned_pages), "%lu\\n"
  loaned_target_kb         0444  PAGES2KB(loaned_pages_target), "%lu\\n"
  oom_freed_kb             0644  PAGES2KB(oom_freed_pages); a write needs
                                 CAP_SYS_ADMIN (else EPERM) and must parse
                                 (simple_strtoul, base 10) as 0 (else
                                 EBADMSG); it resets oom_freed_pages
  simulate_loan_target_kb  0644  only when simulate=1: a DEVICE_ULONG_ATTR,
                                 read as "%lx\\n" (hex, as device_show_ulong
                                 prints it), written with kstrtoul(buf, 0)

Errors: a missing file raises SysfsNoEntry (an OSError with ENOENT that is
also a KeyError); a write to a file without a write bit, EACCES; a store that
fails, OSError with its errno.

cmm_sysfs_register()/cmm_unregister_sysfs() follow cmm.c step by step
(subsys_system_register, device_register, one device_create_file per
attribute, then simulate_loan_target_kb) including its error unwinding.
Each step can be made to fail through the driver's init_faults.
"""
import errno
import os

from ksm_engine.kstrtox import kstrtoul, simple_strtoul

from .cint import PAGES2KB, to_u64


class SysfsNoEntry(OSError, KeyError):
    """No such sysfs file: OSError(ENOENT) and KeyError at once."""

    def __init__(self, name):
        OSError.__init__(self, errno.ENOENT, os.strerror(errno.ENOENT), name)

    def __str__(self):
        return OSError.__str__(self)


class DeviceAttribute:
    """struct device_attribute: a file with its mode and handlers."""

    def __init__(self, name, mode, show, store=None):
        self.name = name          # file name
        self.mode = mode          # permission bits (0444 read-only)
        self.show = show          # () -> str
        self.store = store        # (buf, admin) -> int (len or -errno)


def cmm_attrs(drv):
    """cmm_attrs[]: the three files every cmm device has, in order."""

    def store_oom_pages(buf, admin):
        val = simple_strtoul(buf, 10)
        if not admin:                       # !capable(CAP_SYS_ADMIN)
            return -errno.EPERM
        if val != 0:
            return -errno.EBADMSG
        drv.oom_freed_pages = 0
        return len(buf)

    return [
        DeviceAttribute("loaned_kb", 0o444,
                        lambda: "%d\n" % PAGES2KB(drv.loaned_pages.read())),
        DeviceAttribute("loaned_target_kb", 0o444,
                        lambda: "%d\n" % PAGES2KB(drv.loaned_pages_target)),
        DeviceAttribute("oom_freed_kb", 0o644,
                        lambda: "%d\n" % PAGES2KB(drv.oom_freed_pages),
                        store_oom_pages),
    ]


def simulate_loan_target_attr(drv):
    """DEVICE_ULONG_ATTR(simulate_loan_target_kb, 0644, ...)."""

    def store(buf, admin):
        try:
            new = kstrtoul(buf, 0)
        except OSError as e:
            return -e.errno
        drv.simulate_loan_target_kb = new
        return len(buf)                     # always the full write size

    return DeviceAttribute("simulate_loan_target_kb", 0o644,
                           lambda: "%x\n" % to_u64(drv.simulate_loan_target_kb),
                           store)


class CmmSysfs:
    """/sys/devices/system/cmm/cmm0 (see the module comment).

    Fields:
      files               name -> DeviceAttribute, only the files that exist
      subsys_registered   the "cmm" bus (subsys_system_register) exists
      device_registered   the cmm0 device (device_register) exists
    """

    path = "/sys/devices/system/cmm/cmm0"

    def __init__(self):
        self.files = {}
        self.subsys_registered = False
        self.device_registered = False

    # dict-like reading
    def __getitem__(self, name):
        return self.read(name)

    def __contains__(self, name):
        return name in self.files

    def __iter__(self):
        return iter(list(self.files))

    def __len__(self):
        return len(self.files)

    def keys(self):
        return list(self.files)

    def items(self):
        return [(n, self.read(n)) for n in list(self.files)]

    def get(self, name, default=None):
        try:
            return self.read(name)
        except SysfsNoEntry:
            return default

    def mode(self, name):
        """The file's permission bits."""
        try:
            return self.files[name].mode
        except KeyError:
            raise SysfsNoEntry(name) from None

    def read(self, name):
        """What read(2) of the file returns."""
        try:
            attr = self.files[name]
        except KeyError:
            raise SysfsNoEntry(name) from None
        return attr.show()

    def write(self, name, value, admin=False):
        """write(2) ``value`` (str) to the file.  Returns the bytes
        consumed; raises OSError with the store's errno."""
        try:
            attr = self.files[name]
        except KeyError:
            raise SysfsNoEntry(name) from None
        if not isinstance(value, str):
            raise TypeError("sysfs writes take a str")
        if not attr.mode & 0o222 or attr.store is None:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), name)
        rc = attr.store(value, bool(admin))
        if rc < 0:
            raise OSError(-rc, os.strerror(-rc), name)
        return rc

    def __setitem__(self, name, value):
        """``sysfs[name] = value``: a write by root (CAP_SYS_ADMIN)."""
        self.write(name, value, admin=True)


def cmm_sysfs_register(drv):
    """cmm_sysfs_register(): 0 or a negative errno; on failure everything
    this function made is removed again, as in cmm.c."""
    fs = drv.sysfs
    rc = drv._fault("subsys_system_register")
    if rc:
        return rc
    fs.subsys_registered = True
    drv._log("+subsys")

    rc = drv._fault("device_register")
    if rc:
        return _subsys_unregister(drv, rc)
    fs.device_registered = True
    drv._log("+device")

    attrs = cmm_attrs(drv)
    i = 0
    while i < len(attrs):
        rc = drv._fault("device_create_file:" + attrs[i].name)
        if rc:
            return _fail(drv, attrs, i, rc)
        fs.files[attrs[i].name] = attrs[i]
        drv._log("+file:" + attrs[i].name)
        i += 1

    if not drv.simulate:
        return 0
    sim = simulate_loan_target_attr(drv)
    rc = drv._fault("device_create_file:" + sim.name)
    if rc:
        return _fail(drv, attrs, i, rc)
    fs.files[sim.name] = sim
    drv._log("+file:" + sim.name)
    return 0


def _fail(drv, attrs, i, rc):
    """The ``fail:`` label: remove the files made so far, unregister the
    device, then fall into ``subsys_unregister:``."""
    fs = drv.sysfs
    while i - 1 >= 0:
        i -= 1
        fs.files.pop(attrs[i].name, None)          # device_remove_file
        drv._log("-file:" + attrs[i].name)
    _device_unregister(drv)
    return _subsys_unregister(drv, rc)


def _device_unregister(drv):
    """device_unregister(): the device and every file left in it go."""
    fs = drv.sysfs
    fs.files.clear()
    fs.device_registered = False
    drv._log("-device")


def _subsys_unregister(drv, rc):
    drv.sysfs.subsys_registered = False
    drv._log("-subsys")
    return rc


def cmm_unregister_sysfs(drv):
    """cmm_unregister_sysfs(): remove the three files, the device, the bus
    (simulate_loan_target_kb goes with the device)."""
    fs = drv.sysfs
    for attr in cmm_attrs(drv):
        if fs.files.pop(attr.name, None) is not None:
            drv._log("-file:" + attr.name)
    _device_unregister(drv)
    _subsys_unregister(drv, 0)
