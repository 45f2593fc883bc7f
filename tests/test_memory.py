"""tune_allocator: freed tensors go back to the OS instead of staying in a fragmented glibc heap."""
import subprocess
import sys

import pytest

from bertorch import memory

PROBE = """
import sys, torch
from bertorch.memory import tune_allocator
if sys.argv[1] == "tuned":
    tune_allocator()
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
big = torch.empty(24 * 2**20, dtype=torch.uint8)
del big                                               # a large free raises glibc's dynamic mmap threshold
blocks = [torch.ones(12 * 2**20, dtype=torch.uint8) for _ in range(25)]   # 300 MB of 12 MB tensors
keep = blocks[-1]                                     # the newest block pins the top of the heap
before = rss_mb()
del blocks
print(before - rss_mb())                              # MB given back to the OS
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or memory._libc() is None, reason="glibc only")
def test_tuned_allocator_returns_freed_tensors_to_the_os():
    def released(mode):
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                             env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
        return float(out.stdout.strip().splitlines()[-1])

    assert released("tuned") > 250
    assert released("default") < 50  # glibc's defaults keep the fragmented heap: what the tuning fixes
