"""Small workloads for the differential tests: each is a list of images
(bytes, one per process) plus the knobs to set.  Deterministic."""
import random

from ksm_engine import PAGE_SIZE as P


def _rnd(seed):
    return random.Random(seed)


def _unique(r, n):
    return [r.randbytes(P) for _ in range(n)]


def dup_across_processes():
    r = _rnd(1)
    common = _unique(r, 300)
    return [b"".join(common + _unique(r, 100)) for _ in range(3)], {}


def zero_pages(use_zero_pages):
    r = _rnd(2)
    common = _unique(r, 50)
    imgs = [b"".join([bytes(P)] * 120 + common + _unique(r, 30) + [bytes(P)] * 7) for _ in range(2)]
    return imgs, {"use_zero_pages": str(use_zero_pages)}


def chains_past_max_page_sharing():
    a, b = b"\xa5" * P, bytes(range(256)) * (P // 256)
    return [b"".join([a] * 700 + [b] * 300), b"".join([b] * 200 + [a] * 100)], {}


def small_max_page_sharing():
    r = _rnd(3)
    pages = _unique(r, 7)
    imgs = [b"".join(pages[(i * 7 + k) % 7] for k in range(97 + i * 13)) for i in range(3)]
    return imgs, {"max_page_sharing": "3"}


def differ_in_last_bytes():
    r = _rnd(4)
    body = r.randbytes(P - 4)
    img = b"".join(body + (i % 37).to_bytes(4, "little") for i in range(600))
    return [img, img[: 200 * P]], {}


def all_unique():
    r = _rnd(5)
    return [r.randbytes(400 * P), r.randbytes(300 * P)], {}


def vm_mix_no_smart_scan():
    r = _rnd(6)
    os_image = _unique(r, 200)
    imgs = []
    for g in range(4):
        pages = os_image + [bytes(P)] * 60 + _unique(r, 80) + [bytes([g]) * P] * 20
        r.shuffle(pages)
        imgs.append(b"".join(pages))
    return imgs, {"smart_scan": "0", "max_page_sharing": "5"}


def vm_mix_zero_and_chains():
    r = _rnd(7)
    os_image = _unique(r, 100)
    imgs = []
    for g in range(5):
        pages = os_image * 2 + [bytes(P)] * 90 + _unique(r, 40)
        r.shuffle(pages)
        imgs.append(b"".join(pages))
    return imgs, {"use_zero_pages": "1", "max_page_sharing": "4"}


WORKLOADS = {
    "dup_across_processes": dup_across_processes,
    "zero_pages_off": lambda: zero_pages(0),
    "zero_pages_on": lambda: zero_pages(1),
    "chains_past_max_page_sharing": chains_past_max_page_sharing,
    "small_max_page_sharing": small_max_page_sharing,
    "differ_in_last_bytes": differ_in_last_bytes,
    "all_unique": all_unique,
    "vm_mix_no_smart_scan": vm_mix_no_smart_scan,
    "vm_mix_zero_and_chains": vm_mix_zero_and_chains,
}
