"""cffi build script for the C core: compiled as the module ``ksm_engine._core``.

setup.py names this file in ``cffi_modules``; ``python ksm_engine/_build_core.py``
builds in place.  The declarations Python sees are the region of the one
public header, csrc/ksm_engine.h, between ``CDEF BEGIN`` and ``CDEF END``.

Environment:
  KSM_ENGINE_SANITIZE=1   build with AddressSanitizer and UBSan (scripts/run_sanitizers.sh, docs/robustness.md)
  KSM_ENGINE_DEBUG=1      -O0 -g and assertions on
"""
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(os.path.dirname(HERE), "csrc")
SOURCES = ["arena.c", "mm.c", "checksum.c", "ksm.c", "ksm_check.c", "introspect.c",
           "contents.c"]


def _cdef():
    with open(os.path.join(CSRC, "ksm_engine.h")) as f:
        text = f.read()
    m = re.search(r"/\* CDEF BEGIN \*/(.*?)/\* CDEF END \*/", text, re.S)
    return m.group(1)


def _flags():
    cflags = ["-std=gnu11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"]
    ldflags = []
    if os.environ.get("KSM_ENGINE_SANITIZE"):
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
               "-fno-sanitize-recover=undefined"]
        cflags += ["-O1", "-g"] + san
        ldflags += san
    elif os.environ.get("KSM_ENGINE_DEBUG"):
        cflags += ["-O0", "-g"]
    else:
        cflags += ["-O2", "-DNDEBUG"]
    return cflags, ldflags


ffibuilder = FFI()
ffibuilder.cdef(_cdef())
_cflags, _ldflags = _flags()
ffibuilder.set_source(
    "ksm_engine._core",
    '#include "ksm_engine.h"',
    sources=[os.path.join("csrc", s) for s in SOURCES],
    include_dirs=[CSRC],
    extra_compile_args=_cflags,
    extra_link_args=_ldflags,
)

if __name__ == "__main__":
    os.chdir(os.path.dirname(HERE))
    ffibuilder.compile(verbose=False)
