"""ksmd: the KSM daemon, written once as a kernel thread that either clock
runs (ksm_engine.clock: a real thread on RealClock, wake-ups on a SimClock).

Ksmd.thread() is mm/ksm.c ksm_scan_thread(): while run has bit 0 and a
process is registered, one ksm_do_scan(pages_to_scan) under the machine
lock, then wait_event_freezable_timeout(ksm_iter_wait, sleep_millisecs !=
sleep_ms, sleep_ms); otherwise wait_event_freezable(ksm_thread_wait,
ksmd_should_run()).  So the sleep ends early only when sleep_millisecs is
written with another value (or on stop()); other writes and registrations
wake the thread, which re-checks and goes back to sleep for the rest of the
time.  A wake-up that comes while a batch runs is not lost: the condition
is checked under the wait queue's lock before sleeping.

The kernel's two wait queues are one here (``wq``): each waiter re-checks
its own condition, so waking both on every event is the same thing.

Fields of Ksmd:
  _ksm      the Ksm whose daemon this is
  _k        the running Kthread, or None
  wq        the WaitQueue (ksm_thread_wait and ksm_iter_wait)
  hooks     callables hook(ksm, scanned) run after every batch, outside
            the machine lock, in ksmd's own thread (on a SimClock: at the
            batch's simulated time); an application's view of the batches
The scan itself runs in C with the GIL released.
"""
from ..clock import RealClock, Wait, WaitQueue


class Ksmd:
    def __init__(self, ksm):
        self._ksm = ksm
        self._k = None
        self.wq = WaitQueue()
        self.hooks = []

    @property
    def running(self):
        return self._k is not None and self._k.alive

    def start(self, clock=None):
        """kthread_run(ksm_scan_thread) on ``clock`` (default: a new
        RealClock, i.e. a real thread).  Nothing if already running."""
        if self.running:
            return
        self._k = (clock or RealClock()).kthread_run(self.thread(), "ksmd")

    def stop(self, timeout=10.0):
        """kthread_stop(); TimeoutError if a real thread has not ended
        within ``timeout`` seconds."""
        k = self._k
        if k is None:
            return
        k.stop(timeout)
        self._k = None

    def wake(self):
        """wake_up_interruptible() on ksm_thread_wait and ksm_iter_wait."""
        self.wq.wake_up()

    def _should_run(self):
        ksm = self._ksm
        return bool(ksm.knobs["run"] & 1 and ksm.scanner.slots)

    def thread(self):
        """ksm_scan_thread() as a generator (see ksm_engine.clock)."""
        ksm = self._ksm
        knobs = ksm.knobs
        while True:
            with ksm.machine.lock:
                should = self._should_run()
                scanned = ksm.scanner.do_scan(knobs["pages_to_scan"]) if should else 0
                sleep_ms = knobs["sleep_millisecs"]
            if should:
                for hook in list(self.hooks):
                    hook(ksm, scanned)
                yield Wait(self.wq, lambda: knobs["sleep_millisecs"] != sleep_ms, sleep_ms)
            else:
                yield Wait(self.wq, self._should_run)
