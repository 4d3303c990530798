"""ksmd: the KSM daemon as a Python thread.

The loop of mm/ksm.c ksm_scan_thread(): while run has bit 1 and a process
is registered, do one ksm_do_scan(pages_to_scan) under the machine lock,
then sleep sleep_millisecs; otherwise wait until there is work (a
registration or a sysfs write wakes it, as ksm_thread_wait).  The sleep
ends early only when sleep_millisecs is written with another value (the
kernel's wait on ksm_iter_wait re-checks exactly that) or on stop(); other
writes and registrations wake the thread, which goes back to sleep for
the rest of the time.  The scan itself runs in C with the GIL released.
"""
import threading
import time


class Ksmd:
    def __init__(self, ksm):
        self._ksm = ksm
        self._thread = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def start(self):
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="ksmd", daemon=True)
        self._thread.start()

    def stop(self, timeout=10.0):
        t = self._thread
        if t is None:
            return
        self._stop.set()
        self._wake.set()
        t.join(timeout)
        if t.is_alive():
            raise TimeoutError("ksmd did not stop")
        self._thread = None

    def wake(self):
        self._wake.set()

    def _should_run(self):
        ksm = self._ksm
        return ksm.knobs["run"] & 1 and ksm.scanner.slots

    def _loop(self):
        ksm = self._ksm
        lock = ksm.machine.lock
        while True:
            # cleared before the batch, not after: a wake-up that comes
            # while this batch runs (a sysfs write waiting for the lock),
            # or a stop(), still cuts the sleep after it short
            self._wake.clear()
            if self._stop.is_set():
                break
            with lock:
                should = self._should_run()
                if should:
                    ksm.scanner.do_scan(ksm.knobs["pages_to_scan"])
                sleep_ms = ksm.knobs["sleep_millisecs"]
            if should:
                if sleep_ms:
                    self._sleep(sleep_ms)
            else:
                self._wake.wait(0.1)

    def _sleep(self, sleep_ms):
        """wait_event_freezable_timeout(ksm_iter_wait, sleep_millisecs !=
        sleep_ms, sleep_ms): until the time is up, sleep_millisecs holds
        another value, or stop()."""
        deadline = time.monotonic() + sleep_ms / 1000.0
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._wake.wait(remaining):
                return
            self._wake.clear()
            if self._ksm.knobs["sleep_millisecs"] != sleep_ms:
                return
