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
Windows, musl). Call it first thing, before data and model are built.

Measured peak RSS (random BERT 4x312, 12 heads, FFN 1200, ChnSentiCorp, batch 32, max len 128, 12 steps,
``python -m bench.train_throughput --steps 12 --log_every 4 --modes ours``, runs side by side; step/s
measured alone on a quiet machine): glibc defaults 1.76 GB at 43.5 samples/s; mmap threshold 64 KiB
1.31 GB but only 36 samples/s (every mid-size tensor page-faults fresh memory); 1 MiB 1.32 GB at 32
samples/s; 8 MiB 1.60 GB at 45.6 samples/s -- the setting kept: memory down, speed unchanged.

Also: ``THP_MEM_ALLOC_ENABLE=1`` (PyTorch backs big tensors with transparent huge pages: fewer page faults)
and ``release_free_memory()`` after tokenising. With those and bertorch/models/low_memory.py the same
benchmark peaks at 1.01 GB (32.7 samples/s; 1.32 GB at 28.9 samples/s with --no-low_memory_training,
results/train_throughput_lowmem_quiet.json).

Not applied under ``--bf16`` (bertorch/cli.py): there it costs as much speed as it saves memory. With bf16
low-memory training, on a fixed batch it took the peak from 1.07 to 0.91 GB at 0.84x the step speed
(``python -m bench.step_overhead --variants ours-bf16 ours-tuned-bf16``, results/step_overhead.md, last table;
before bf16 had low-memory training it cost 13% and lowered no peak), and on a real classification run from
1.71 to 1.45 GB for 17% more wall time (``python -m bench.vs_original --cases classification
--programs original ours_bf16 ours_bf16_mallopt``, results/vs_original_bf16_mallopt/). Setting the MALLOC_*
variables of ``tuned_environment()`` applies it to a --bf16 run from outside.

Under ``--bf16`` on CPU, ``limit_onednn_cache()`` instead: bf16 matmuls run through oneDNN, which keeps a
primitive (with its scratch memory) for every distinct shape it has seen, up to 1,024 of them. With length
grouping every padded length and last-batch size is a new shape, so a real --bf16 run's RSS grew step after
step (a 100-step classification run on the 4x312 BERT: 1.05 GB after 15 steps, 1.80 GB at the end; 2.16 GB
after 200 steps), while its fp32 twin stayed flat at 1.1-1.2 GB. With the cache off the same run peaked at
1.24 GB (sampled /proc RSS, runs in turns; capacity 64: 1.55 GB; 1.22 GB set by this function in-process);
``malloc_trim`` every step only got it to 1.34 GB: the memory is held, not free. The cap costs speed (every
matmul builds its primitive again): against the original program (``python -m bench.vs_original --steps 100
--repeats 2 --cases classification --programs original ours_bf16 ours_bf16_onednn_cache ours_bf16_mallopt
--output results/vs_original_bf16_onednn``) --bf16 took 73.1 s at 1.19 GB capped, 63.8 s at 1.69 GB with
oneDNN's default cache, 69.6 s at 1.10 GB capped plus the MALLOC_* settings (the original: 134 s, 1.91 GB).
Kept: the memory budget of fp32 at 1.8x the original's speed. Measured, not adopted yet: padding batches to
a multiple of 8 tokens (fewer shapes) with the default cache kept the uncapped speed at 1.30 GB (55.8 s vs
55.3 s uncapped, 62.4 s capped; an ad-hoc wrapper around the collator, median of 2 runs in turns).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

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
    environment wins. Returns whether glibc accepted them (False off glibc, where it does nothing)."""
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


def tuned_environment() -> dict[str, str]:
    """tune_allocator()'s settings as environment variables (glibc and PyTorch read them at start-up): what a
    benchmark sets to apply them to a child process that does not call tune_allocator() itself."""
    return {"THP_MEM_ALLOC_ENABLE": "1", **{_ENV[param]: str(value) for param, value in _DEFAULTS.items()}}


ONEDNN_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


def limit_onednn_cache(capacity: int = 0) -> None:
    """Cap oneDNN's primitive cache (the module docstring says why --bf16 does). oneDNN reads the variable once,
    at its first primitive: in a process that already ran CPU bf16 matmuls (a notebook calling bertorch.train
    twice) this changes nothing. It stays set for the rest of the process and its children. An explicit
    variable in the environment wins (ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024 is oneDNN's default)."""
    os.environ.setdefault(ONEDNN_CACHE_ENV, str(capacity))


def release_free_memory() -> bool:
    """Give the heap's free pages back to the OS (glibc ``malloc_trim``): tokenising a dataset leaves
    hundreds of MB freed but resident. Returns whether anything was released (False off glibc)."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(ctypes.c_size_t(0)))
