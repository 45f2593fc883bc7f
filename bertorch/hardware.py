"""Whether this machine runs bfloat16 natively, for a script that picks the autocast for its user
(scripts/quickstart.sh): a CUDA GPU that supports bf16, or a CPU with bf16 instructions (AVX512-BF16, AMX).

On such a CPU --bf16 trains faster at fp32's accuracy (ChnSentiCorp, 300 steps: 386 s against 595 s, dev
accuracy 0.9156 both, results/sweeps_classification.md, measured before --bf16 capped oneDNN's cache; the
quickstart's epoch with the cap: 288 s, dev 0.9130 as in fp32); without the instructions bf16 is emulated and
slower than fp32, so nothing is chosen there.

    python -m bertorch.hardware      # prints --bf16 where it pays, else nothing
"""
from __future__ import annotations

NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo: x86 Linux only (empty elsewhere, e.g. on
    macOS, or on Arm, whose cpuinfo lists `Features`), so there nothing is picked."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    import torch

    if torch.cuda.is_available():  # not emulated bf16 (pre-Ampere GPUs report that too by default)
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return bool(NATIVE_BF16_CPU_FLAGS & cpu_flags(cpuinfo))


def emulated_bf16_cpu(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """An x86 CPU whose flags list no bf16 instructions: bf16 autocast is emulated there (an AVX2-only AMD EPYC:
    a 1536x312 @ 312x1200 linear layer's forward and backward took 1.5-2.1 s under bf16 against 63-91 ms in
    fp32, one thread). False where the flags are unknown (no /proc/cpuinfo, Arm)."""
    flags = cpu_flags(cpuinfo)
    return bool(flags) and not NATIVE_BF16_CPU_FLAGS & flags


def autocast_flag() -> str:
    """What scripts/quickstart.sh passes: "--bf16" where bf16 is native, else ""."""
    return "--bf16" if native_bf16() else ""


if __name__ == "__main__":
    print(autocast_flag())
