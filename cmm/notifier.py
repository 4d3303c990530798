"""Notifier chains the driver registers on besides the machine's OOM chain.

The Machine (ksm_engine) owns the OOM notifier list.  The reboot notifier
list and the memory-hotplug notifier chain are guest-kernel chains the
Machine does not model, so they live here: a NotifierChain is a list of
callbacks ordered by priority (higher first; equal priorities keep
registration order), called by call_chain(action, data).

Registration can be made to fail (``fail_next_register = errno``) so the
error paths of cmm_init() can be driven from tests, as a kernel under memory
pressure could fail them.

Actions (include/linux/reboot.h, include/linux/memory.h):
  SYS_DOWN/SYS_RESTART, SYS_HALT, SYS_POWER_OFF        reboot chain
  MEM_ONLINE ... MEM_CANCEL_OFFLINE                    memory chain
Return values (include/linux/notifier.h): NOTIFY_DONE, NOTIFY_OK.
"""
import errno
import threading

NOTIFY_DONE = 0x0000
NOTIFY_OK = 0x0001
NOTIFY_STOP_MASK = 0x8000

SYS_DOWN = 0x0001
SYS_RESTART = SYS_DOWN
SYS_HALT = 0x0002
SYS_POWER_OFF = 0x0003

MEM_ONLINE = 1 << 0
MEM_GOING_OFFLINE = 1 << 1
MEM_OFFLINE = 1 << 2
MEM_GOING_ONLINE = 1 << 3
MEM_CANCEL_ONLINE = 1 << 4
MEM_CANCEL_OFFLINE = 1 << 5

#: scenario / CLI spelling -> memory notifier action
MEM_ACTIONS = {
    "online": MEM_ONLINE,
    "going_offline": MEM_GOING_OFFLINE,
    "offline": MEM_OFFLINE,
    "going_online": MEM_GOING_ONLINE,
    "cancel_online": MEM_CANCEL_ONLINE,
    "cancel_offline": MEM_CANCEL_OFFLINE,
}

REBOOT_ACTIONS = {"restart": SYS_RESTART, "halt": SYS_HALT, "power_off": SYS_POWER_OFF}


class NotifierChain:
    """A blocking notifier chain.

    Fields:
      name                for messages ("reboot", "memory")
      _blocks             [(priority, seq, callback)], highest priority first
      _seq                registration counter (stable order among equals)
      _lock               the chain's rwsem (a plain lock here)
      fail_next_register  errno the next register() fails with, or None
    """

    def __init__(self, name):
        self.name = name
        self._blocks = []
        self._seq = 0
        self._lock = threading.RLock()
        self.fail_next_register = None

    def register(self, callback, priority=0):
        """blocking_notifier_chain_register(): add ``callback(action, data)``.
        Raises OSError(errno) when a failure was injected."""
        with self._lock:
            if self.fail_next_register is not None:
                err, self.fail_next_register = self.fail_next_register, None
                raise OSError(err, f"{self.name} notifier registration failed")
            self._seq += 1
            self._blocks.append((priority, self._seq, callback))
            self._blocks.sort(key=lambda b: (-b[0], b[1]))

    def unregister(self, callback):
        """blocking_notifier_chain_unregister(): returns 0, or -ENOENT when
        ``callback`` is not on the chain (harmless, as in the kernel)."""
        with self._lock:
            for i, b in enumerate(self._blocks):
                if b[2] == callback:
                    del self._blocks[i]
                    return 0
            return -errno.ENOENT

    def registered(self, callback):
        """True if ``callback`` is on the chain."""
        with self._lock:
            return any(b[2] == callback for b in self._blocks)

    def __len__(self):
        return len(self._blocks)

    def call_chain(self, action, data=None):
        """blocking_notifier_call_chain(): call every callback in priority
        order until one returns a value with NOTIFY_STOP_MASK; returns the
        last return value (NOTIFY_DONE if the chain is empty)."""
        with self._lock:
            blocks = list(self._blocks)
        ret = NOTIFY_DONE
        for _, _, cb in blocks:
            ret = cb(action, data)
            if ret & NOTIFY_STOP_MASK:
                break
        return ret
