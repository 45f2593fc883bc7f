"""tune_allocator: freed tensors go back to the OS instead of staying in a fragmented glibc heap; under --bf16,
lengths padded to a multiple of 8: oneDNN's bf16 matmuls keep memory per shape, and there are fewer shapes."""
import os
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


TRIM_PROBE = """
import torch
from bertorch.memory import release_free_memory, tune_allocator
tune_allocator()
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
blocks = [torch.ones(2**20, dtype=torch.uint8) for _ in range(300)]  # 300 MB of 1 MB tensors: heap, not mmap
keep = blocks[-1]                                                    # pins the top of the heap
del blocks
before = rss_mb()
release_free_memory()
print(before - rss_mb())                                             # MB given back by malloc_trim
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or memory._libc() is None, reason="glibc only")
def test_release_free_memory_returns_a_pinned_heap_to_the_os():
    out = subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    assert float(out.stdout.strip().splitlines()[-1]) > 250


def test_tune_allocator_turns_on_huge_pages_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    memory.tune_allocator()
    assert memory.os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    memory.tune_allocator()
    assert memory.os.environ["THP_MEM_ALLOC_ENABLE"] == "0"


@pytest.mark.parametrize("extra", [(), ("--bf16",)])
def test_training_tunes_the_allocator_in_fp32_and_bf16(extra, tiny_bert, sentiment_files, tmp_path, monkeypatch):
    """Measured (bertorch/memory.py's docstring): with --bf16's batches padded to a multiple of 8 the settings
    no longer cost bf16 speed, and lower its peak."""
    import run_classifier

    calls = []
    monkeypatch.setattr(memory, "tune_allocator", lambda *a, **kw: calls.append("mallopt") or True)
    run_classifier.main(["--pretrained_model_name_or_path", tiny_bert, "--train_data_file", sentiment_files["train"],
                         "--label_file", sentiment_files["labels"], "--saved_dir", str(tmp_path / "out"),
                         "--max_steps", "1", "--batch_size", "8", "--no_cuda", *extra])
    assert calls == ["mallopt"]


SHAPES_PROBE = """
import sys, torch
from bertorch.data.batching import AUTOCAST_PAD_MULTIPLE, padded_length
multiple = AUTOCAST_PAD_MULTIPLE if sys.argv[1] == "padded" else 1
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
w = torch.randn(1200, 312, requires_grad=True)
before = rss_mb()
for n in range(1, 200):                               # 199 lengths, as length grouping makes them
    x = torch.randn(4 * padded_length(n, multiple, 200), 312, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = torch.nn.functional.linear(x, w)
    y.float().sum().backward()
print(rss_mb() - before)                              # MB kept after the loop
"""


def test_padding_to_a_multiple_of_8_stops_bf16_matmuls_from_keeping_memory_per_length():
    # glibc gives freed tensors straight back (tiny thresholds), so what stays is what oneDNN holds
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
    env.pop(memory.ONEDNN_CACHE_ENV, None)
    grown = {mode: float(subprocess.run([sys.executable, "-c", SHAPES_PROBE, mode], capture_output=True, text=True,
                                        env=env, check=True).stdout) for mode in ("longest", "padded")}
    if grown["longest"] < 100:
        pytest.skip(f"this CPU's bf16 matmuls keep little per shape ({grown['longest']:.0f} MB over 199 shapes)")
    assert grown["padded"] < 0.6 * grown["longest"], grown


def test_bertorch_allocator_glibc_leaves_the_defaults(monkeypatch):
    monkeypatch.setenv(memory.ALLOCATOR_ENV, "glibc")
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    monkeypatch.setattr(memory, "_libc", lambda: pytest.fail("mallopt called"))
    assert memory.tune_allocator() is False
    assert "THP_MEM_ALLOC_ENABLE" not in memory.os.environ
