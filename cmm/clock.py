"""Clocks the cmm thread sleeps on: real time, or a simulated clock.

cmm_thread() is written once (CmmDriver._cmm_thread) as a generator: every
``yield SECONDS`` is a ``msleep_interruptible(SECONDS * 1000)``.  A clock
runs such a body as a "kthread":

  RealClock   a daemon threading.Thread per kthread; each sleep is a wait on
              the kthread's stop event, so kthread_stop() interrupts it at
              once, as kthread_stop() wakes a thread in msleep_interruptible.
  SimClock    no thread at all.  Sleepers sit in a heap ordered by wake-up
              time; advance(seconds) moves time forward and resumes every
              wake-up due by then, in time order (ties in start order), in the
              caller's thread.  Runs are deterministic: the same scenario gives
              the same wake-ups every time.

Both give a Kthread handle with stop() (kthread_stop: ask the thread to stop
and wait until it has) and an ``alive`` flag.

Simulated time is kept in integer milliseconds so that wake-ups never drift
by float rounding; ``now`` reports seconds.  A sleep of 0 s lasts one jiffy
(msleep_interruptible(0) sleeps msecs_to_jiffies(0) + 1 = 1 jiffy; HZ=100
here), so a driver with delay=0 polls 100 times a simulated second instead
of looping forever at one instant.
"""
import heapq
import itertools
import logging
import threading
import time

from .numbers import finite_number

log = logging.getLogger("cmm")

HZ = 100                    # jiffies per second of the modelled kernel
JIFFY_MS = 1000 // HZ       # the shortest sleep, in milliseconds


def sleep_ms(seconds):
    """Milliseconds a ``msleep_interruptible(seconds * 1000)`` lasts."""
    ms = int(round(finite_number(seconds, "sleep") * 1000))
    return ms if ms > 0 else JIFFY_MS


class Kthread:
    """Handle on a running kthread (task_struct, as far as cmm.c uses it).

    Fields:
      name     the thread's name ("cmmthread")
      alive    True until the body returns or the thread is stopped
    """

    def __init__(self, name):
        self.name = name
        self.alive = True

    def stop(self):  # pragma: no cover - overridden
        raise NotImplementedError


class _RealKthread(Kthread):
    """A kthread on a real threading.Thread."""

    def __init__(self, body, name):
        super().__init__(name)
        self._stop = threading.Event()   # kthread_should_stop()
        self._body = body
        self.error = None                # exception that killed the thread
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self):
        gen = self._body
        try:
            seconds = next(gen)
            while not self._stop.is_set():
                # msleep_interruptible(); an early wake-up means kthread_stop()
                if self._stop.wait(sleep_ms(seconds) / 1000.0):
                    break
                seconds = gen.send(None)
        except StopIteration:
            pass
        except BaseException as e:  # a BUG() in the thread: log it, thread dies
            self.error = e
            log.exception("%s died", self.name)
        finally:
            gen.close()
            self.alive = False

    def stop(self):
        """kthread_stop(): set should-stop, wake the thread, wait for it."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()


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
    """A kthread whose wake-ups are run by SimClock.advance()."""

    def __init__(self, clock, body, name):
        super().__init__(name)
        self._clock = clock
        self._gen = body

    def stop(self):
        """kthread_stop(): the thread is asleep, so it simply never wakes
        again.  Called from the thread's own round (a poll hook), the round
        finishes and the thread is not woken again."""
        if self.alive:
            self.alive = False
            if self._clock._current is not self:
                self._gen.close()


class SimClock:
    """Simulated time; wake-ups run only inside advance().

    Fields:
      now_ms     current simulated time, milliseconds since the start
      _sleepers  heap of (wake_ms, seq, kthread): every kthread asleep
      _seq       tie-breaker so equal wake times run in the order slept
      _running   True while advance() is resuming a sleeper (no re-entry)
      _current   the kthread being resumed, if any
    """

    simulated = True

    def __init__(self):
        self.now_ms = 0
        self._sleepers = []
        self._seq = itertools.count()
        self._running = False
        self._current = None       # the kthread whose round is running

    def now(self):
        """Simulated seconds since the start (an int when whole)."""
        s, ms = divmod(self.now_ms, 1000)
        return s if ms == 0 else self.now_ms / 1000.0

    def _sleep(self, k, seconds):
        heapq.heappush(self._sleepers, (self.now_ms + sleep_ms(seconds), next(self._seq), k))

    def kthread_run(self, body, name):
        """kthread_run(): the body runs up to its first sleep now."""
        k = _SimKthread(self, body, name)
        try:
            self._sleep(k, next(body))
        except StopIteration:
            k.alive = False
        return k

    def next_wakeup(self):
        """Time in seconds of the next live wake-up, or None."""
        for when, _, k in sorted(self._sleepers):
            if k.alive:
                return when / 1000.0
        return None

    def advance(self, seconds):
        """Move time forward by ``seconds``, running every wake-up due by
        then in time order, each at its own time.  Exceptions raised by a
        thread body propagate (the thread is then dead)."""
        if finite_number(seconds, "seconds") < 0:
            raise ValueError("time only moves forward")
        if self._running:
            raise RuntimeError("SimClock.advance() called from a kthread")
        target = self.now_ms + int(round(seconds * 1000))
        self._running = True
        try:
            while self._sleepers and self._sleepers[0][0] <= target:
                when, _, k = heapq.heappop(self._sleepers)
                if not k.alive:
                    continue
                self.now_ms = when
                self._current = k
                try:
                    nxt = k._gen.send(None)
                except StopIteration:
                    k.alive = False
                    continue
                except BaseException:
                    k.alive = False
                    raise
                finally:
                    self._current = None
                if k.alive:      # the round may have stopped its own thread
                    self._sleep(k, nxt)
                else:
                    k._gen.close()
            self.now_ms = target
        finally:
            self._running = False
