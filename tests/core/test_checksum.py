"""The page checksums KSM uses (csrc/checksum.c), bit for bit against
independent implementations:

  ke_xxh64, and ke_checksum_page in today's mode (xxh64 seed 0, low 32
  bits, as calc_checksum in mm/ksm.c)   vs  the ``xxhash`` package;
  ke_jhash2 (today's jhash2)  vs  a pure-Python jhash2 written below from
  Bob Jenkins' lookup3.c description (hashword), whose mix/final steps are
  themselves checked against lookup3.c's published test vectors through
  hashlittle;
  ke_jhash2_2009, and ke_checksum_page in 2009 mode (the jhash2 of 2009
  kernels, lookup2's hash2, over the page's 1024 words, initval 17, as the
  2009 patch's calc_checksum)  vs  a pure-Python lookup2 hash2 below, and a
  vector computed independently for bytes(range(256)) * 16.

Pages and lengths: random pages, zero and all-ones pages, every length
0..100 and the lengths around xxh64's 32-byte stripes and the page size,
odd (unaligned) buffer addresses, and seeds at the edges of 64 bits.
"""
import random
import struct

import pytest
import xxhash

from ksm_engine import MADV_MERGEABLE, PAGE_SIZE, Machine
from ksm_engine._native import ffi, lib

M32 = 0xFFFFFFFF


# --- lookup3, from its description ---------------------------------------------------


def _rot(x, k):
    return ((x << k) | (x >> (32 - k))) & M32


def _mix(a, b, c):
    """lookup3's mix(): reversible mixing of three 32-bit values, six steps
    of ``x -= z; x ^= rot(z, r); z += y`` with (x, y, z) turning through
    (a, b, c), (b, c, a), (c, a, b)."""
    v = [a, b, c]
    for i, r in enumerate((4, 6, 8, 16, 19, 4)):
        x, y, z = i % 3, (i + 1) % 3, (i + 2) % 3
        v[x] = (v[x] - v[z]) & M32
        v[x] ^= _rot(v[z], r)
        v[z] = (v[z] + v[y]) & M32
    return tuple(v)


def _final(a, b, c):
    """lookup3's final(): final mixing of three 32-bit values into c, seven
    steps of ``x ^= y; x -= rot(y, r)`` for x = c, a, b, c, a, b, c and y
    the value before x in (a, b, c), cyclically."""
    v = [a, b, c]
    for i, r in enumerate((14, 11, 25, 16, 4, 14, 24)):
        x = (2 + i) % 3
        y = (x + 2) % 3
        v[x] ^= v[y]
        v[x] = (v[x] - _rot(v[y], r)) & M32
    return tuple(v)


def jhash2(words, initval):
    """hashword(k, length, initval) of lookup3.c == Linux's jhash2()."""
    length = len(words)
    a = b = c = (0xDEADBEEF + (length << 2) + initval) & M32
    i = 0
    while length > 3:
        a = (a + words[i]) & M32
        b = (b + words[i + 1]) & M32
        c = (c + words[i + 2]) & M32
        a, b, c = _mix(a, b, c)
        length -= 3
        i += 3
    if length == 0:
        return c
    tail = list(words[i:]) + [0, 0]
    a = (a + tail[0]) & M32
    if length >= 2:
        b = (b + tail[1]) & M32
    if length == 3:
        c = (c + tail[2]) & M32
    return _final(a, b, c)[2]


def hashlittle(data, initval):
    """lookup3.c hashlittle() (little-endian byte version), only to check
    _mix/_final against the published vectors."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & M32
    pos = 0
    while length > 12:
        k = struct.unpack_from("<3I", data, pos)
        a, b, c = (a + k[0]) & M32, (b + k[1]) & M32, (c + k[2]) & M32
        a, b, c = _mix(a, b, c)
        length -= 12
        pos += 12
    if length == 0:
        return c
    k = struct.unpack("<3I", data[pos:] + bytes(12 - length))
    a, b, c = (a + k[0]) & M32, (b + k[1]) & M32, (c + k[2]) & M32
    return _final(a, b, c)[2]


def test_lookup3_reference_against_published_vectors():
    # lookup3.c driver5()
    assert hashlittle(b"", 0) == 0xDEADBEEF
    assert hashlittle(b"Four score and seven years ago", 0) == 0x17770551
    assert hashlittle(b"Four score and seven years ago", 1) == 0xCD628161
    # hashword and hashlittle agree on whole words (little-endian)
    rng = random.Random(5)
    for n in (0, 1, 2, 3, 4, 5, 6, 7, 12, 13):
        words = [rng.getrandbits(32) for _ in range(n)]
        data = struct.pack(f"<{n}I", *words)
        assert jhash2(words, 17) == hashlittle(data, 17)


# --- the C functions ---------------------------------------------------------------------


def c_xxh64(data, seed=0):
    return lib.ke_xxh64(ffi.from_buffer(data), len(data), seed)


def c_jhash2(words, initval):
    buf = struct.pack(f"<{len(words)}I", *words)
    return lib.ke_jhash2(ffi.cast("uint32_t *", ffi.from_buffer(buf)), len(words), initval)


def c_page_checksum(page, compat):
    return lib.ke_checksum_page(ffi.from_buffer(page), compat)


def pages():
    rng = random.Random(1234)
    out = [bytes(PAGE_SIZE), b"\xff" * PAGE_SIZE, bytes(range(256)) * 16,
           bytes(PAGE_SIZE - 1) + b"\x01", b"\x01" + bytes(PAGE_SIZE - 1)]
    out += [rng.randbytes(PAGE_SIZE) for _ in range(20)]
    return out


EDGE_LENGTHS = sorted(set(range(0, 101)) | {127, 128, 129, 255, 256, 1000, 4064, 4095, 4096,
                                             4097, 8191, 8192, 65536 + 7})


@pytest.mark.parametrize("length", EDGE_LENGTHS)
def test_xxh64_lengths(length):
    data = random.Random(length).randbytes(length)
    assert c_xxh64(data) == xxhash.xxh64_intdigest(data)


@pytest.mark.parametrize("seed", [0, 1, 17, 0x9E3779B185EBCA87, 2 ** 63, 2 ** 64 - 1])
def test_xxh64_seeds(seed):
    rng = random.Random(seed & 0xFFFF)
    for length in (0, 3, 8, 31, 32, 33, 100, PAGE_SIZE):
        data = rng.randbytes(length)
        assert c_xxh64(data, seed) == xxhash.xxh64_intdigest(data, seed=seed)


def test_xxh64_of_unaligned_buffers():
    """The core reads words with memcpy: any address works."""
    base = random.Random(9).randbytes(PAGE_SIZE + 64)
    mv = memoryview(base)
    for off in range(1, 9):
        for length in (7, 8, 32, 33, PAGE_SIZE):
            chunk = mv[off:off + length]
            assert c_xxh64(chunk) == xxhash.xxh64_intdigest(chunk.tobytes())


@pytest.mark.parametrize("k", range(len(pages())))
def test_page_checksum_today_is_low_32_bits_of_xxh64(k):
    page = pages()[k]
    assert c_page_checksum(page, 0) == xxhash.xxh64_intdigest(page) & M32


def jhash2_2009(words, initval):
    """hash2() of lookup2.c == the jhash2() of Linux before 2.6.37."""
    def mix(a, b, c):
        # nine steps of x = x - y - z; x ^= z >> s (z << s for b), with
        # (x, y, z) turning through (a, b, c), (b, c, a), (c, a, b)
        v = [a, b, c]
        for i, s in enumerate((13, 8, 13, 12, 16, 5, 3, 10, 15)):
            x, y, z = i % 3, (i + 1) % 3, (i + 2) % 3
            v[x] = (v[x] - v[y] - v[z]) & M32
            v[x] ^= ((v[z] << s) & M32) if x == 1 else (v[z] >> s)
        return tuple(v)
    a = b = 0x9E3779B9
    c = initval
    k, n = 0, len(words)
    while n - k >= 3:
        a, b, c = (a + words[k]) & M32, (b + words[k + 1]) & M32, (c + words[k + 2]) & M32
        a, b, c = mix(a, b, c)
        k += 3
    c = (c + 4 * n) & M32
    rest = n - k
    if rest == 2:
        b = (b + words[k + 1]) & M32
    if rest >= 1:
        a = (a + words[k]) & M32
    return mix(a, b, c)[2]


@pytest.mark.parametrize("k", range(len(pages())))
def test_page_checksum_2009_is_lookup2_jhash2_initval_17(k):
    page = pages()[k]
    words = struct.unpack(f"<{PAGE_SIZE // 4}I", page)
    assert c_page_checksum(page, 1) == jhash2_2009(words, 17)


def test_page_checksum_2009_known_vector():
    assert c_page_checksum(bytes(range(256)) * 16, 1) == 0x8320D981


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 6, 7, 100, 1024])
def test_jhash2_2009_lengths(n):
    rng = random.Random(n)
    words = [rng.getrandbits(32) for _ in range(n)]
    buf = struct.pack(f"<{n}I", *words) if n else b"\0"
    for initval in (0, 17, M32):
        got = lib.ke_jhash2_2009(ffi.cast("uint32_t *", ffi.from_buffer(buf)), n, initval)
        assert got == jhash2_2009(words, initval)


def test_page_checksum_of_unaligned_page():
    buf = random.Random(3).randbytes(PAGE_SIZE + 3)
    page = memoryview(buf)[3:]
    words = struct.unpack(f"<{PAGE_SIZE // 4}I", page)
    assert c_page_checksum(page, 0) == xxhash.xxh64_intdigest(page.tobytes()) & M32
    assert c_page_checksum(page, 1) == jhash2_2009(words, 17)


@pytest.mark.parametrize("n", list(range(0, 14)) + [100, 1023, 1024])
def test_jhash2_lengths(n):
    rng = random.Random(n)
    words = [rng.getrandbits(32) for _ in range(n)]
    for initval in (0, 17, 0xDEADBEEF, M32):
        assert c_jhash2(words, initval) == jhash2(words, initval)


def test_jhash2_edge_words():
    for words in ([0] * 7, [M32] * 7, [0x80000000, 1, M32, 0, 0x7FFFFFFF]):
        assert c_jhash2(words, 17) == jhash2(words, 17)


def test_checksum_pages_in_bulk_equals_one_by_one():
    ps = pages()
    buf = b"".join(ps)
    for compat in (0, 1):
        out = ffi.new("uint32_t[]", len(ps))
        assert lib.ke_checksum_pages(ffi.from_buffer(buf), len(ps), compat, out) == 0
        assert list(out) == [c_page_checksum(p, compat) for p in ps]
    assert lib.ke_checksum_pages(ffi.NULL, 0, 0, ffi.NULL) == 0


def test_checksum_page_null_is_zero_not_a_crash():
    assert lib.ke_checksum_page(ffi.NULL, 0) == 0
    assert lib.ke_checksum_page(ffi.NULL, 1) == 0


# --- the checksum KSM records ------------------------------------------------------------


@pytest.mark.parametrize("compat", [None, "2009"])
def test_rmap_items_record_the_checksum_of_their_page(compat):
    """After one pass every rmap_item's oldchecksum is its page's checksum
    of the machine's mode, computed here independently."""
    m = Machine(ram="1MiB", ksm_compat=compat)
    p = m.spawn()
    ps = pages()[:8]
    a = p.mmap(len(ps) * PAGE_SIZE)
    p.write(a, b"".join(ps))
    p.madvise(a, len(ps) * PAGE_SIZE, MADV_MERGEABLE)
    m.ksm.full_scan(1)
    items = {i["address"]: i["oldchecksum"] for i in p.rmap_items()}
    for k, page in enumerate(ps):
        if compat == "2009":
            want = jhash2_2009(struct.unpack(f"<{PAGE_SIZE // 4}I", page), 17)
        else:
            want = xxhash.xxh64_intdigest(page) & M32
        assert items[a + k * PAGE_SIZE] == want
