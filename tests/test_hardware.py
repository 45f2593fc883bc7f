"""bertorch.hardware: --bf16 is picked only where the CPU has bf16 instructions (elsewhere it is emulated)."""
import pytest
import torch

from bertorch import hardware

CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f {extra}\nbogomips\t: 4800\n"


@pytest.mark.parametrize("extra, native", [("avx512_bf16 avx512_vnni", True), ("amx_bf16 amx_tile", True),
                                           ("avx512_vnni", False), ("", False)])
def test_bf16_is_native_only_with_bf16_instructions(extra, native, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra=extra))
    assert hardware.native_bf16(str(cpuinfo)) is native


def test_no_cpuinfo_means_no_flags_and_no_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.cpu_flags(str(tmp_path / "missing")) == frozenset()
    assert hardware.native_bf16(str(tmp_path / "missing")) is False


@pytest.mark.parametrize("native", [True, False])
def test_on_a_gpu_only_native_bf16_counts(native, monkeypatch):
    """A pre-Ampere GPU emulates bf16: torch's default (including_emulation=True) would say yes there."""
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: asked.append(including_emulation) or native)
    assert hardware.native_bf16() is native and asked == [False]


def test_the_flag_the_quickstart_reads_is_bf16_or_nothing(monkeypatch):
    monkeypatch.setattr(hardware, "native_bf16", lambda: True)
    assert hardware.autocast_flag() == "--bf16"
    monkeypatch.setattr(hardware, "native_bf16", lambda: False)
    assert hardware.autocast_flag() == ""


@pytest.mark.parametrize("extra, emulated", [("avx512_bf16", False), ("amx_bf16", False), ("avx512_vnni", True)])
def test_an_x86_cpu_without_bf16_instructions_emulates_it(extra, emulated, tmp_path):
    """The trainer warns under --bf16 there (an AVX2-only EPYC trained ~20x slower than fp32)."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra=extra))
    assert hardware.emulated_bf16_cpu(str(cpuinfo)) is emulated
    assert hardware.emulated_bf16_cpu(str(tmp_path / "missing")) is False  # unknown flags: no warning
