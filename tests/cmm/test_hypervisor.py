"""The hypervisor stub: H_GET_MPP, H_PAGE_INIT, its loan record, faults."""
import pytest

from cmm.hypervisor import (H_COALESCE_CAND, H_FUNCTION, H_HARDWARE, H_PAGE_SET_ACTIVE,
                            H_PAGE_SET_LOANED, H_PAGE_SET_UNUSED, H_PAGE_STATE_CHANGE,
                            H_PAGE_UNUSED, H_PARAMETER, H_SUCCESS, Hypervisor, h_get_mpp)


def test_flag_values():
    assert H_PAGE_STATE_CHANGE == 1 << 35
    assert H_PAGE_UNUSED == (1 << 34) | (1 << 33)
    assert H_PAGE_SET_LOANED == H_PAGE_STATE_CHANGE | H_PAGE_UNUSED | (1 << 32)
    assert H_PAGE_SET_LOANED == 0xF00000000
    assert H_PAGE_SET_ACTIVE == 0x800000000
    assert H_COALESCE_CAND == 1 << 21


def test_h_get_mpp_all_fields():
    hv = Hypervisor(pool_size=8 << 30, pool_num=3, io_entitlement=512 << 20,
                    unallocated_mem_weight=17)
    p = hv.add_partition(1 << 30, entitled_mem=100 << 20, mapped_mem=7 << 20,
                         group_num=0x8001, mem_weight=200)
    p.set_loan_target(40960)
    rc, d = h_get_mpp(p)
    assert rc == H_SUCCESS
    assert d.entitled_mem == 100 << 20
    assert d.mapped_mem == 7 << 20
    assert d.group_num == 0x8001
    assert d.pool_num == 3
    assert d.mem_weight == 200
    assert d.unallocated_mem_weight == 17
    assert d.unallocated_entitlement == (512 - 100) << 20
    assert d.pool_size == 8 << 30
    assert d.loan_request == 40960
    assert d.backing_mem == 1 << 30


def test_loan_request_falls_as_pages_are_loaned_and_goes_negative():
    hv = Hypervisor()
    p = hv.add_partition(1 << 20)
    p.set_loan_target(8192)
    assert p.hcall_page_init(H_PAGE_SET_LOANED, 0) == H_SUCCESS
    assert h_get_mpp(p)[1].loan_request == 4096
    assert p.hcall_page_init(H_PAGE_SET_LOANED, 4096) == H_SUCCESS
    assert h_get_mpp(p)[1].loan_request == 0
    assert h_get_mpp(p)[1].backing_mem == (1 << 20) - 8192
    p.set_loan_target(0)
    assert h_get_mpp(p)[1].loan_request == -8192
    assert p.hcall_page_init(H_PAGE_SET_ACTIVE, 0) == H_SUCCESS
    assert p.loaned == {4096}
    assert p.loaned_kb == 4


def test_small_cmo_pages_are_recorded_per_cmo_page():
    hv = Hypervisor(cmo_page_size=1024)
    p = hv.add_partition(1 << 20)
    assert p.hcall_page_init(H_PAGE_SET_LOANED, 1024) == H_SUCCESS
    assert p.loaned_bytes == 1024
    assert p.hcall_page_init(H_PAGE_SET_LOANED, 1000) == H_PARAMETER   # not aligned


@pytest.mark.parametrize("flags,addr", [
    (0, 0), (H_PAGE_STATE_CHANGE | (1 << 40), 0), (H_PAGE_SET_LOANED, 1 << 20),
    (H_PAGE_SET_LOANED, -4096), (H_PAGE_SET_LOANED, 100)])
def test_page_init_parameter_errors(flags, addr):
    p = Hypervisor().add_partition(1 << 20)
    assert p.hcall_page_init(flags, addr) == H_PARAMETER
    assert not p.loaned


def test_unused_and_coalesce_candidate():
    p = Hypervisor().add_partition(1 << 20)
    assert p.hcall_page_init(H_PAGE_SET_UNUSED, 0) == H_SUCCESS
    assert not p.loaned
    assert p.hcall_page_init(H_PAGE_SET_LOANED | H_COALESCE_CAND, 4096) == H_SUCCESS
    assert p.coalesce_cand == {4096} and p.loaned == {4096}
    assert p.hcall_page_init(H_PAGE_SET_ACTIVE, 4096) == H_SUCCESS
    assert not p.coalesce_cand


def test_no_cmo_firmware():
    hv = Hypervisor(cmo=False)
    p = hv.add_partition(1 << 20)
    assert h_get_mpp(p)[0] == H_FUNCTION
    assert p.hcall_page_init(H_PAGE_SET_LOANED, 0) == H_FUNCTION
    assert "cmo_enabled=0" in hv.lparcfg(p)
    assert "cmo_page_size" not in hv.lparcfg(p)


def test_fail_page_hcalls_after_and_count():
    p = Hypervisor().add_partition(1 << 20)
    p.fail_page_hcalls(after=2, count=2, rc=H_HARDWARE)
    rcs = [p.hcall_page_init(H_PAGE_SET_LOANED, i * 4096) for i in range(6)]
    assert rcs == [0, 0, H_HARDWARE, H_HARDWARE, 0, 0]
    assert p.loaned == {0, 4096, 4 * 4096, 5 * 4096}
    assert p.calls["failed_page_init"] == 2


def test_failed_set_active_leaves_page_loaned_and_stale():
    p = Hypervisor().add_partition(1 << 20)
    p.hcall_page_init(H_PAGE_SET_LOANED, 0)
    p.fail_page_hcalls(0, 1)
    assert p.hcall_page_init(H_PAGE_SET_ACTIVE, 0) == H_HARDWARE
    assert p.loaned == {0} and p.stale == {0}
    assert p.calls["failed_set_active"] == 1
    assert p.hcall_page_init(H_PAGE_SET_ACTIVE, 0) == H_SUCCESS
    assert not p.loaned and not p.stale


def test_fail_get_mpp_count():
    p = Hypervisor().add_partition(1 << 20)
    p.fail_get_mpp(2)
    assert [h_get_mpp(p)[0] for _ in range(3)] == [H_HARDWARE, H_HARDWARE, H_SUCCESS]


def test_pool_shared_by_partitions():
    hv = Hypervisor(io_entitlement=256 << 20)
    a = hv.add_partition(1 << 20, entitled_mem=100 << 20)
    b = hv.add_partition(1 << 20, entitled_mem=100 << 20)
    assert (a.lpar_id, b.lpar_id) == (1, 2)
    assert h_get_mpp(a)[1].unallocated_entitlement == 56 << 20
    a.hcall_page_init(H_PAGE_SET_LOANED, 0)
    b.hcall_page_init(H_PAGE_SET_LOANED, 0)
    assert hv.loaned_bytes == 8192 and a.loaned == {0} and b.loaned == {0}
    with pytest.raises(ValueError):
        hv.add_partition(1 << 20, lpar_id=1)


def test_lparcfg_text():
    hv = Hypervisor(pool_size=1 << 30)
    p = hv.add_partition(1 << 28, mapped_mem=-1)
    p.set_loan_target(-0 + 12288)
    text = hv.lparcfg(p)
    lines = text.splitlines()
    assert "mapped_entitled_memory" not in text        # -1: not reported
    assert "entitled_memory_pool_size=1073741824 bytes" in lines
    assert "entitled_memory_loan_request=12288" in lines
    assert f"backing_memory={1 << 28} bytes" in lines
    assert lines[-1] == "cmo_page_size=4096"
    assert text.endswith("\n")
    assert p.calls["get_mpp"] == 0      # rendering makes no hcall


@pytest.mark.parametrize("size", [0, 100, 3000, 8192, 65536])
def test_cmo_page_size_validation(size):
    with pytest.raises(ValueError):
        Hypervisor(cmo_page_size=size)
