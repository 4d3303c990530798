"""The scan-time advisor (mm/ksm.c, advisor_mode=scan-time): at the end of
each full scan it retunes pages_to_scan so that a full scan takes about
advisor_target_scan_time seconds without ksmd using more than
advisor_max_cpu percent of a CPU.  Integer arithmetic as in the kernel."""

EWMA_WEIGHT = 30
ADVISOR_MIN_CPU = 10


def ewma(prev, curr):
    return ((100 - EWMA_WEIGHT) * prev + EWMA_WEIGHT * curr) // 100


class ScanTimeAdvisor:
    def __init__(self):
        self.reset()

    def reset(self):
        self.start_ms = 0      # when the current full scan started
        self.cpu_ns = 0        # ksmd CPU time at the end of the last scan
        self.scan_time = 0     # seconds the last full scan took (0: none yet)
        self.change = 0        # smoothed scan-time change, percent

    def start_scan(self, now_ms, cpu_ns):
        self.start_ms = now_ms

    def stop_scan(self, now_ms, cpu_ns, pages_to_scan, target_scan_time, max_cpu,
                  max_pages_to_scan):
        """Returns the new pages_to_scan (mm/ksm.c scan_time_advisor)."""
        scan_time = max((now_ms - self.start_ms) // 1000, 1)
        cpu_ms = (cpu_ns - self.cpu_ns) // 1_000_000
        cpu_percent = max(cpu_ms * 100 // (scan_time * 1000), 1)
        last = self.scan_time or scan_time
        factor = max(target_scan_time * 100 // scan_time, 1)
        change = max(scan_time * 100 // last, 1)
        change = ewma(self.change, change)
        pages = pages_to_scan * 100 // factor
        pages = pages * change // 100
        per_page_cost = max(pages_to_scan // cpu_percent, 1)
        pages = min(pages, per_page_cost * max_cpu)
        pages = max(pages, per_page_cost * ADVISOR_MIN_CPU)
        pages = min(pages, max_pages_to_scan)
        self.change = change
        self.scan_time = scan_time
        self.cpu_ns = cpu_ns
        return pages
