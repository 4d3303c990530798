"""Clocks kernel threads sleep on: real time, or a simulated clock.

A kernel thread is written once, as a generator, and either clock runs it.
What the body yields is how it sleeps:

  ``yield SECONDS``   msleep_interruptible(SECONDS * 1000): sleep that long
                      (cmm_thread).  A sleep of 0 s lasts one jiffy
                      (msleep_interruptible(0) sleeps msecs_to_jiffies(0) + 1
                      = 1 jiffy; HZ=100 here), so a thread with delay=0 polls
                      100 times a second instead of looping at one instant.
  ``yield Wait(wq, cond, timeout_ms)``
                      wait_event_freezable_timeout(wq, cond(), timeout_ms):
                      return at once if cond() holds, else sleep until
                      wq.wake_up() finds cond() true or the time is up.
                      ``timeout_ms=None`` is wait_event_freezable(): no time
                      limit (ksm_scan_thread's two waits).

The clocks:

  RealClock   a daemon threading.Thread per kthread; each sleep is a wait on
              the kthread's stop event (or on the wait queue's condition
              variable), so kthread_stop() interrupts it at once, as
              kthread_stop() wakes a thread in msleep_interruptible.
  SimClock    no thread at all.  Sleepers sit in a heap ordered by wake-up
              time; advance(seconds) moves time forward and resumes every
              wake-up due by then, in time order (ties in the order they
              went to sleep), in the caller's thread.  Runs are
              deterministic: the same scenario gives the same wake-ups every
              time.  A timed Wait of 0 ms lasts 1 ms here (the kernel's
              returns at once, and ksmd then spends its own CPU time; a
              simulation whose time never moved would loop forever).

Both give a Kthread handle with stop() (kthread_stop: ask the thread to stop
and wait until it has) and an ``alive`` flag.

Simulated time is kept in integer milliseconds so that wake-ups never drift
by float rounding; ``now`` reports seconds.

The core's ksmd (ksm/ksmd.py) and the cmm driver's thread (cmm/driver.py)
run on these clocks, so one SimClock carries any number of machines.
"""
import heapq
import itertools
import logging
import threading
import time

from .validate import finite_number

log = logging.getLogger("ksm_engine.clock")

HZ = 100                    # jiffies per second of the modelled kernel
JIFFY_MS = 1000 // HZ       # the shortest msleep, in milliseconds


def sleep_ms(seconds):
    """Milliseconds a ``msleep_interruptible(seconds * 1000)`` lasts."""
    ms = int(round(finite_number(seconds, "sleep") * 1000))
    return ms if ms > 0 else JIFFY_MS


class WaitQueue:
    """wait_queue_head_t: threads waiting for a condition another thread
    makes true and then announces with wake_up().

    Fields:
      _cv         condition variable the RealClock's waiters sleep on
      _sim        SimClock kthreads waiting here now (their Wait says what for)
    """

    def __init__(self):
        self._cv = threading.Condition()
        self._sim = []

    def wake_up(self):
        """wake_up_interruptible(): every waiter re-checks its condition;
        those whose condition holds wake (a SimClock one at the present
        simulated time)."""
        with self._cv:
            self._cv.notify_all()
            sim = list(self._sim)
        for k in sim:
            k._clock._wake(k)


class Wait:
    """What a kthread yields to wait on a WaitQueue (see the module doc).

    Fields:
      wq          the WaitQueue whose wake_up() makes the thread re-check
      cond        callable: the thread stops waiting once it returns true
      timeout_ms  int >= 0, or None for no time limit
    """

    __slots__ = ("wq", "cond", "timeout_ms")

    def __init__(self, wq, cond, timeout_ms=None):
        self.wq = wq
        self.cond = cond
        self.timeout_ms = timeout_ms


class Kthread:
    """Handle on a running kthread (task_struct, as far as callers use it).

    Fields:
      name     the thread's name ("cmmthread", "ksmd")
      alive    True until the body returns or the thread is stopped
    """

    def __init__(self, name):
        self.name = name
        self.alive = True

    def stop(self, timeout=None):  # pragma: no cover - overridden
        raise NotImplementedError


class _RealKthread(Kthread):
    """A kthread on a real threading.Thread.

    Fields (besides Kthread's):
      _stop      kthread_should_stop()
      _waiting   the WaitQueue the thread waits on now, if any (stop()
                 wakes it there)
      error      the exception that killed the thread, if one did
    """

    def __init__(self, body, name):
        super().__init__(name)
        self._stop = threading.Event()
        self._body = body
        self._waiting = None
        self.error = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _wait(self, w):
        """wait_event_freezable_timeout() on a real thread; True when the
        thread was asked to stop."""
        deadline = None if w.timeout_ms is None else time.monotonic() + w.timeout_ms / 1000.0
        self._waiting = w.wq
        try:
            with w.wq._cv:
                while not self._stop.is_set() and not w.cond():
                    if deadline is None:
                        w.wq._cv.wait()
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    w.wq._cv.wait(remaining)
        finally:
            self._waiting = None
        return self._stop.is_set()

    def _run(self):
        gen = self._body
        try:
            req = next(gen)
            while not self._stop.is_set():
                if isinstance(req, Wait):
                    if self._wait(req):
                        break
                # msleep_interruptible(); an early wake-up means kthread_stop()
                elif self._stop.wait(sleep_ms(req) / 1000.0):
                    break
                req = gen.send(None)
        except StopIteration:
            pass
        except BaseException as e:  # a BUG() in the thread: log it, thread dies
            self.error = e
            log.exception("%s died", self.name)
        finally:
            gen.close()
            self.alive = False

    def stop(self, timeout=None):
        """kthread_stop(): set should-stop, wake the thread, wait for it
        (TimeoutError if it has not ended within ``timeout`` seconds)."""
        self._stop.set()
        wq = self._waiting
        if wq is not None:
            wq.wake_up()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"{self.name} did not stop")


class RealClock:
    """Wall-clock time: kthreads are real threads.

    Fields:
      _t0   monotonic time the clock was made; now() counts from it
    """

    simulated = False

    def __init__(self):
        self._t0 = time.monotonic()

    def now(self):
        """Seconds since the clock was made."""
        return time.monotonic() - self._t0

    def kthread_run(self, body, name):
        """kthread_run(): start running generator ``body`` in a new thread."""
        k = _RealKthread(body, name)
        k._thread.start()
        return k


class _SimKthread(Kthread):
    """A kthread whose wake-ups are run by a SimClock.

    Fields (besides Kthread's):
      _gen     the body
      _wait    the Wait it sleeps in, or None (a plain msleep, or running)
      _token   bumped at every sleep: a heap entry with an older token is a
               wake-up that an early wake (WaitQueue.wake_up) replaced
    """

    def __init__(self, clock, body, name):
        super().__init__(name)
        self._clock = clock
        self._gen = body
        self._wait = None
        self._token = 0

    def stop(self, timeout=None):
        """kthread_stop(): the thread is asleep, so it simply never wakes
        again.  Called from the thread's own round (a hook), the round
        finishes and the thread is not woken again."""
        if self.alive:
            self.alive = False
            self._clock._unwait(self)
            if self._clock._current is not self:
                self._gen.close()


class SimClock:
    """Simulated time; wake-ups run only inside advance() and run_until().

    Fields:
      now_ms     current simulated time, milliseconds since the start
      _sleepers  heap of (wake_ms, seq, token, kthread): every timed sleep
      _seq       tie-breaker so equal wake times run in the order slept
      _running   True while a wake-up is being run (no re-entry)
      _current   the kthread being resumed, if any
    """

    simulated = True

    def __init__(self):
        self.now_ms = 0
        self._sleepers = []
        self._seq = itertools.count()
        self._running = False
        self._current = None

    def now(self):
        """Simulated seconds since the start (an int when whole)."""
        s, ms = divmod(self.now_ms, 1000)
        return s if ms == 0 else self.now_ms / 1000.0

    # -- sleeping and waking ---------------------------------------------------
    def _push(self, k, when):
        k._token += 1
        heapq.heappush(self._sleepers, (when, next(self._seq), k._token, k))

    def _unwait(self, k):
        """k no longer waits on a queue (it woke or was stopped)."""
        if k._wait is not None:
            with k._wait.wq._cv:
                k._wait.wq._sim.remove(k)
            k._wait = None

    def _sleep(self, k, req):
        """Put k to sleep as ``req`` (seconds or a Wait) says.  Returns
        False when a Wait's condition already holds (no sleep at all)."""
        if not isinstance(req, Wait):
            self._push(k, self.now_ms + sleep_ms(req))
            return True
        if req.cond():
            return False
        k._wait = req
        with req.wq._cv:
            req.wq._sim.append(k)
        if req.timeout_ms is None:
            k._token += 1            # no timed wake-up: only wake_up() ends it
        else:
            self._push(k, self.now_ms + max(int(req.timeout_ms), 1))
        return True

    def _wake(self, k):
        """WaitQueue.wake_up() reached k: if its condition holds it wakes
        now (its timed wake-up, if any, is dropped)."""
        w = k._wait
        if w is not None and k.alive and w.cond():
            self._unwait(k)
            self._push(k, self.now_ms)

    def _resume(self, k):
        """Run k's round: from its wake-up to its next sleep."""
        self._unwait(k)
        self._running = True
        self._current = k
        try:
            while True:
                try:
                    req = k._gen.send(None)
                except StopIteration:
                    k.alive = False
                    return
                except BaseException:
                    k.alive = False
                    raise
                if not k.alive:           # the round stopped its own thread
                    k._gen.close()
                    return
                if self._sleep(k, req):
                    return
        finally:
            self._current = None
            self._running = False

    def kthread_run(self, body, name):
        """kthread_run(): the body runs up to its first sleep now."""
        k = _SimKthread(self, body, name)
        try:
            req = next(body)
            while not self._sleep(k, req):
                req = body.send(None)
        except StopIteration:
            k.alive = False
        return k

    def _step(self, target_ms):
        """Run the earliest live wake-up due by target_ms; False if none."""
        while self._sleepers and self._sleepers[0][0] <= target_ms:
            when, _, token, k = heapq.heappop(self._sleepers)
            if not k.alive or token != k._token:
                continue
            self.now_ms = when
            self._resume(k)
            return True
        return False

    def _check_not_running(self):
        if self._running:
            raise RuntimeError("SimClock.advance() called from a kthread")

    def advance(self, seconds):
        """Move time forward by ``seconds``, running every wake-up due by
        then in time order, each at its own time.  Exceptions raised by a
        thread body propagate (the thread is then dead)."""
        if finite_number(seconds, "seconds") < 0:
            raise ValueError("time only moves forward")
        self._check_not_running()
        target = self.now_ms + int(round(seconds * 1000))
        while self._step(target):
            pass
        self.now_ms = target

    def run_until(self, cond):
        """Run wake-ups in time order until cond() holds after one (time is
        then that wake-up's) or no wake-up is left.  Returns cond()."""
        self._check_not_running()
        while not cond():
            if not self._step(float("inf")):
                return bool(cond())
        return True
