"""Fine points where the engine follows the kernel rather than intuition."""
import errno

import pytest

from ksm_engine import MADV_MERGEABLE, MADV_UNMERGEABLE, PAGE_SIZE, Machine
from ksm_engine.process import TASK_SIZE


def test_madvise_past_the_address_space_is_enomem_with_mapped_part_done():
    m = Machine(ram="4MiB")
    p = m.spawn()
    a = p.mmap(2 * PAGE_SIZE, addr=TASK_SIZE - 2 * PAGE_SIZE)
    with pytest.raises(OSError) as e:
        p.madvise(a, 8 * PAGE_SIZE, MADV_MERGEABLE)
    assert e.value.errno == errno.ENOMEM
    assert p.area_at(a).mergeable
    with pytest.raises(OSError) as e:
        p.madvise(PAGE_SIZE, (1 << 64) - PAGE_SIZE, MADV_MERGEABLE)
    assert e.value.errno == errno.EINVAL


def test_run2_leaves_ksm_pages_of_non_mergeable_areas_alone():
    """A page the parent's scan turned into a KSM page while a fork child
    shares it is mapped by the child too; if the child's area is not
    mergeable, run=2 (which unmerges mergeable areas only) leaves it KSM,
    with its stable node and no rmap_item, as the kernel does."""
    m = Machine(ram="4MiB")
    parent = m.spawn()
    a = parent.mmap(2 * PAGE_SIZE)
    parent.write(a, b"\x42" * 2 * PAGE_SIZE)
    parent.madvise(a, 2 * PAGE_SIZE, MADV_MERGEABLE)
    child = parent.fork()
    child.madvise(a, 2 * PAGE_SIZE, MADV_UNMERGEABLE)   # child: not mergeable
    m.ksm.full_scan(2)
    assert m.ksm.stats["pages_shared"] == 1 and m.ksm.stats["pages_sharing"] == 1
    _, child_flags = child.ptes(a, 2)
    assert 3 in child_flags                               # the child maps the KSM page
    m.ksm.sysfs["run"] = "2"
    _, parent_flags = parent.ptes(a, 2)
    _, child_flags = child.ptes(a, 2)
    assert set(parent_flags) == {1}                       # unmerged in the mergeable area
    assert 3 in child_flags                               # left alone in the other one
    st = m.ksm.stats
    assert (st["pages_shared"], st["pages_sharing"], st["rmap_items"]) == (0, 0, 0)
    assert [n["kind"] for n in m.ksm.stable_nodes()] == ["plain"]
    with pytest.raises(OSError) as e:                     # as the kernel: not removable
        m.ksm.sysfs["max_page_sharing"] = "3"
    assert e.value.errno == errno.EBUSY
    assert child.read(a, 2 * PAGE_SIZE) == b"\x42" * 2 * PAGE_SIZE
    child.exit()                                          # the last mapping goes
    assert m.ksm.stable_nodes() == []
    m.ksm.sysfs["max_page_sharing"] = "3"
    m.check()
