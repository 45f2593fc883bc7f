"""Process-level memory settings for CPU training.

``tune_allocator()`` tells glibc malloc (via ``mallopt``) to serve large blocks with ``mmap`` and to give freed
heap back to the OS. A training step allocates and frees hundreds of MB of activation/gradient tensors of
varying sizes (dynamic padding changes the shapes every batch); with glibc's defaults the *dynamic* mmap
threshold climbs to 32 MB after the first large free, so later tensors land on the brk heap / arenas, where
fragmentation keeps the peak growing step after step and nothing is returned.

  M_MMAP_THRESHOLD = 8 MiB (fixed; also disables the dynamic raise)   -> big tensors are mmap'ed and unmapped
  M_TRIM_THRESHOLD = 16 MiB                                           -> the brk heap top is trimmed
  M_ARENA_MAX      = 2                                                -> threads don't each grow an arena

Same effect as MALLOC_MMAP_THRESHOLD_=65536 etc. in the environment, but set from Python so every entry script
gets it; an explicit MALLOC_* variable in the environment wins. A no-op (returns False) off glibc (macOS,
Windows, musl). Call it first thing, before data and model are built. ``BERTORCH_ALLOCATOR=glibc`` in the
environment leaves glibc's and PyTorch's defaults alone (what a benchmark compares against).

Measured peak RSS (random BERT 4x312, 12 heads, FFN 1200, ChnSentiCorp, batch 32, max len 128, 12 steps,
``python -m bench.train_throughput --steps 12 --log_every 4 --modes ours``, runs side by side; step/s
measured alone on a quiet machine): glibc defaults 1.76 GB at 43.5 samples/s; mmap threshold 64 KiB
1.31 GB but only 36 samples/s (every mid-size tensor page-faults fresh memory); 1 MiB 1.32 GB at 32
samples/s; 8 MiB 1.60 GB at 45.6 samples/s -- the setting kept: memory down, speed unchanged.

Also: ``THP_MEM_ALLOC_ENABLE=1`` (PyTorch backs big tensors with transparent huge pages: fewer page faults)
and ``release_free_memory()`` after tokenising. With those and bertorch/models/low_memory.py the same
benchmark peaks at 1.01 GB (32.7 samples/s; 1.32 GB at 28.9 samples/s with --no-low_memory_training,
results/train_throughput_lowmem_quiet.json).

Under ``--bf16`` as well, since batches are padded to a multiple of 8 tokens there (cli's --pad_to_multiple_of).
CPU bf16 matmuls run through oneDNN, which keeps a primitive (with its scratch memory) for every distinct shape
it has seen, up to 1,024. Padded to its longest example, every padded length was a new shape and a real --bf16
run's RSS grew step after step (100 classification steps on the 4x312 BERT: 1.05 GB after 15 steps, 1.80 GB
at the end, 2.16 GB after 200), while fp32 stayed flat at 1.1-1.2 GB; these settings then cost 16-17% of the
wall time for 15% of the peak, and capping the cache (``ONEDNN_PRIMITIVE_CACHE_CAPACITY=0``) held it at
1.19 GB for 15% more wall time. With multiples of 8 there are at most 16 lengths. Against the original program
(at commit 1e8ae78, ``python -m bench.vs_original --steps 100 --repeats 2 --cases classification sbert --programs original
ours_bf16 ours_bf16_onednn_cache ours_bf16_mallopt --output results/vs_original_bf16_pad8``, then the --bf16
default capped the cache and left glibc alone): classification 62.1 s / 1.27 GB with oneDNN's cache, 77.7 s /
1.04 GB capped, 73.1 s / 0.94 GB capped with these settings (the original 138 s / 2.03 GB); Sentence-BERT
33.3 s / 0.89 GB, 40.9 s / 0.85 GB, 40.1 s / 0.79 GB (the original 58.6 s / 1.49 GB). So the cache stays
(the cap cost 18-20% of the wall time for 5-18% of the peak) and these settings apply: they no longer cost
speed. ``ONEDNN_PRIMITIVE_CACHE_CAPACITY=0`` in the environment still trades that speed for that memory.
The default so (``--cases classification sbert ner_linear --programs original ours_bf16 --output
results/vs_original_bf16_default``, a later run): classification 72.0 s / 1.09 GB (1.83x the original's wall
time at 0.54x its peak), Sentence-BERT 1.96x / 0.56x, NER Linear 3.07x / 0.43x. That classification figure
is below the 2.23x of the cache without these settings in the run before; side by side (``--cases
classification --programs original ours_bf16 ours_bf16_glibc --output results/vs_original_bf16_glibc``):
1.86x / 0.58x with these settings, 2.12x / 0.66x with glibc's defaults (``BERTORCH_ALLOCATOR=glibc``). Kept on
under --bf16, as in fp32: the memory budget first, at 12% of the wall time; that variable is the speed choice.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

ALLOCATOR_ENV = "BERTORCH_ALLOCATOR"  # "glibc": tune_allocator() does nothing
_DEFAULTS = {M_MMAP_THRESHOLD: 8 * 2**20, M_TRIM_THRESHOLD: 16 * 2**20, M_ARENA_MAX: 2}
_ENV = {M_MMAP_THRESHOLD: "MALLOC_MMAP_THRESHOLD_", M_TRIM_THRESHOLD: "MALLOC_TRIM_THRESHOLD_",
        M_ARENA_MAX: "MALLOC_ARENA_MAX"}


def _libc():
    if os.name != "posix":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only  # noqa: B018
        return libc
    except (OSError, AttributeError):
        return None


def tune_allocator(mmap_threshold: int | None = None, trim_threshold: int | None = None,
                   arena_max: int | None = None) -> bool:
    """Apply the glibc malloc settings above and PyTorch's huge-page allocation; a value already in the
    environment wins. Returns whether glibc accepted them (False off glibc, where it does nothing, and under
    BERTORCH_ALLOCATOR=glibc)."""
    if os.environ.get(ALLOCATOR_ENV) == "glibc":
        return False
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # read by PyTorch's CPU allocator at its first big block
    libc = _libc()
    if libc is None:
        return False
    wanted = {M_MMAP_THRESHOLD: mmap_threshold, M_TRIM_THRESHOLD: trim_threshold, M_ARENA_MAX: arena_max}
    ok = True
    for param, value in wanted.items():
        if _ENV[param] in os.environ:  # the user's explicit setting is already in effect
            continue
        value = _DEFAULTS[param] if value is None else value
        ok &= libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1
    return bool(ok)


ONEDNN_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"  # oneDNN's per-shape cache (above); read once


def release_free_memory() -> bool:
    """Give the heap's free pages back to the OS (glibc ``malloc_trim``): tokenising a dataset leaves
    hundreds of MB freed but resident. Returns whether anything was released (False off glibc)."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(ctypes.c_size_t(0)))
