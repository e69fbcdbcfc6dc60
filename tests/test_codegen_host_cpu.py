"""The host CPU as a TVM target: triple, mcpu, feature overrides, cores."""

from __future__ import annotations

import platform

import pytest
import tvm
from tvm.target import codegen

from optc.codegen.host_cpu import (
    available_cores,
    cpu_flags,
    host_target,
    llvm_features,
    machine_arch,
    mattr_overrides,
    missing_features,
    parse_cpu_flags,
)

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 pni ssse3 sse4_1 sse4_2 avx avx2 fma
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm \
lrcpc dcpop asimddp uscat ilrcpc flagm paca pacg
CPU implementer\t: 0x41
"""  # a Cortex-A78AE (Jetson AGX Orin)


def test_host_target_describes_this_machine() -> None:
    target = host_target()
    assert target["kind"] == "llvm"
    assert target["mtriple"].split("-")[0] == machine_arch()
    assert target["num-cores"] == available_cores()
    assert codegen.llvm_is_valid_cpu(target["mcpu"], target["mtriple"])
    assert tvm.target.Target(target).attrs["mcpu"] == target["mcpu"]
    assert missing_features(target) == []


def test_num_cores_can_be_fixed() -> None:
    assert host_target(num_cores=1)["num-cores"] == 1


def test_parse_cpu_flags() -> None:
    assert "avx2" in (parse_cpu_flags(X86_CPUINFO) or ())
    assert "asimddp" in (parse_cpu_flags(ARM_CPUINFO) or ())
    assert parse_cpu_flags("processor\t: 0\n") is None


def test_features_hidden_by_the_cpu_are_disabled() -> None:
    # znver4 implies AVX-512; a VM whose CPU reports only AVX2 must not get it.
    llvm = llvm_features({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver4"})
    overrides = mattr_overrides("x86_64", llvm, parse_cpu_flags(X86_CPUINFO) or frozenset())
    assert "-avx512f" in overrides and "-avx512bw" in overrides
    assert not any(o.startswith("+") for o in overrides)


def test_features_the_cpu_name_misses_are_enabled() -> None:
    llvm = llvm_features({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64"})
    overrides = mattr_overrides("x86_64", llvm, parse_cpu_flags(X86_CPUINFO) or frozenset())
    assert {"+avx", "+avx2", "+fma", "+sse4.2"} <= set(overrides)


def test_arm_features() -> None:
    llvm = llvm_features({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a78"})
    flags = parse_cpu_flags(ARM_CPUINFO) or frozenset()
    assert mattr_overrides("aarch64", llvm, flags) == []
    assert mattr_overrides("aarch64", llvm, flags - {"asimddp"}) == ["-dotprod"]


@pytest.mark.skipif(cpu_flags() is None or platform.machine() != "x86_64",
                    reason="needs an x86-64 Linux host")
def test_missing_features_of_a_foreign_cpu() -> None:
    flags = cpu_flags() or frozenset()
    target = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "sapphirerapids"}
    assert ("amx-tile" in missing_features(target)) == ("amx_tile" not in flags)
    # Code for another architecture is not this CPU's business.
    assert missing_features({"kind": "llvm", "mtriple": "aarch64-linux-gnu"}) == []
