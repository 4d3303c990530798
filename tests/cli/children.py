"""Live processes with known memory, for `ksm-engine estimate --pid`.

python_child(): a Python process that maps private anonymous memory, fills
  it with given pages, read-faults some more (shared zero page mappings),
  prints its pid and waits for its stdin to close; SIGUSR1 makes it unmap
  the region (and say "unmapped").  Its interpreter brings
  memory of its own, so only bounds are known of the whole process.

NolibcChild: a tiny x86-64 program without libc (raw system calls), built
  with the C compiler the package itself needs: its only private anonymous
  memory is the region it reads from stdin and its stack (a few unique pages
  of arguments, environment and auxv), so the whole process is known.
"""
import os
import platform
import shutil
import struct
import subprocess
import sys

from ksm_engine import PAGE_SIZE as PAGE

PYTHON_CHILD = r"""
import ctypes, mmap, os, signal, sys
PAGE = 4096
try:  # allow a sibling process to read us where Yama restricts ptrace
    ctypes.CDLL(None, use_errno=True).prctl(0x59616d61, ctypes.c_ulong(-1), 0, 0, 0)
except Exception:
    pass
data = sys.stdin.buffer.read(int(sys.argv[1]) * PAGE)
region = mmap.mmap(-1, len(data), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
region[:] = data
del data
if int(sys.argv[2]):
    untouched = mmap.mmap(-1, int(sys.argv[2]) * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    zero_reads = sum(untouched[i * PAGE] for i in range(int(sys.argv[2])))  # read faults only
def unmap(signum, frame):          # SIGUSR1: the region goes away
    region.close()
    sys.stdout.write("unmapped\n")
    sys.stdout.flush()
signal.signal(signal.SIGUSR1, unmap)
sys.stdout.write(f"{os.getpid()}\n")
sys.stdout.flush()
sys.stdin.buffer.read()
"""

NOLIBC_C = r"""
/* Only its stdin region and its stack are private anonymous memory. */
static long sc(long n, long a, long b, long c, long d, long e, long f)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall" : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

static long read_all(char *p, long n)
{
    long done = 0;
    while (done < n) {
        long r = sc(0, 0, (long)(p + done), n - done, 0, 0, 0);   /* read */
        if (r <= 0)
            return -1;
        done += r;
    }
    return 0;
}

__attribute__((force_align_arg_pointer)) void _start(void)
{
    unsigned long npages = 0;
    char *p, digits[24];
    long pid, i = sizeof(digits);
    sc(157, 0x59616d61, -1, 0, 0, 0, 0);        /* prctl(PR_SET_PTRACER, ANY) */
    if (read_all((char *)&npages, 8))
        sc(60, 1, 0, 0, 0, 0, 0);
    /* mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) */
    p = (char *)sc(9, 0, (long)(npages * 4096), 3, 0x22, -1, 0);
    if ((long)p < 0 || read_all(p, (long)(npages * 4096)))
        sc(60, 2, 0, 0, 0, 0, 0);
    pid = sc(39, 0, 0, 0, 0, 0, 0);              /* getpid */
    digits[--i] = '\n';
    do {
        digits[--i] = (char)('0' + pid % 10);
        pid /= 10;
    } while (pid);
    sc(1, 1, (long)(digits + i), (long)sizeof(digits) - i, 0, 0, 0);
    while (sc(0, 0, (long)digits, 1, 0, 0, 0) > 0)   /* wait for EOF */
        ;
    sc(60, 0, 0, 0, 0, 0, 0);
}
"""


class Child:
    """A started child: .pid, .proc; stop() ends it (closes its stdin)."""

    def __init__(self, proc):
        self.proc = proc
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            proc.kill()
            raise RuntimeError(f"child did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
        self.pid = int(line)

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def target_env():
    """The environment of a process to be estimated.  It needs none of the
    sanitizer run's preloads (scripts/run_sanitizers.sh): under ASan it
    would carry 14 TiB of shadow memory as a private anonymous area, whose
    pagemap alone takes minutes to read."""
    env = dict(os.environ)
    preload = [x for x in env.get("LD_PRELOAD", "").split(":") if x and "san" not in os.path.basename(x)]
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    else:
        env.pop("LD_PRELOAD", None)
    return env


def python_child(data, untouched_pages=0):
    """A Python child holding ``data`` (whole pages) in a private anonymous
    mapping plus ``untouched_pages`` only read (zero page mappings)."""
    assert len(data) % PAGE == 0
    p = subprocess.Popen([sys.executable, "-c", PYTHON_CHILD, str(len(data) // PAGE),
                          str(untouched_pages)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=target_env())
    p.stdin.write(data)
    p.stdin.flush()
    return Child(p)


def nolibc_unavailable():
    """Why the no-libc child cannot be built here, or None."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"the no-libc child is x86-64 code, this is {platform.machine()}"
    if not (shutil.which("cc") or shutil.which("gcc")):
        return "no C compiler"
    return None


def build_nolibc(directory):
    """Compiles the no-libc child into directory; returns its path."""
    src = os.path.join(directory, "nolibc_child.c")
    exe = os.path.join(directory, "nolibc_child")
    with open(src, "w") as f:
        f.write(NOLIBC_C)
    cc = shutil.which("cc") or shutil.which("gcc")
    subprocess.run([cc, "-O1", "-nostdlib", "-static", "-no-pie", "-fno-stack-protector",
                    "-fno-asynchronous-unwind-tables", "-o", exe, src],
                   check=True, capture_output=True)
    return exe


def nolibc_child(exe, data, **popen):
    """The no-libc child holding ``data`` (whole pages)."""
    assert len(data) % PAGE == 0
    p = subprocess.Popen([exe], stdin=subprocess.PIPE, stdout=subprocess.PIPE, **popen)
    p.stdin.write(struct.pack("<Q", len(data) // PAGE) + data)
    p.stdin.flush()
    return Child(p)
