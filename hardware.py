"""What this machine computes fast: the CPU's name and vector flags, read once from /proc/cpuinfo.

`precision = "auto"` (model.py) chooses by them: bfloat16 pays on a CPU only where it is computed in
hardware (AMX tiles, or AVX-512 BF16 dot products, through TensorFlow's oneDNN kernels); on an
AVX2-only CPU it is emulated and slower than float32 (docs/performance.md). Standard library only.
"""
import functools
import os
import platform

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # strongest first
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@functools.lru_cache(maxsize=None)
def _cpuinfo(path="/proc/cpuinfo"):
    """(model name, set of flags) of the first processor listed; ('?', empty set) where unreadable."""
    name, flags = platform.processor() or "?", set()
    if not os.path.exists(path):
        return name, frozenset()
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("?", platform.processor()):
                name = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    return name, frozenset(flags)


def cpu_name():
    return _cpuinfo()[0]


def cpu_flags():
    return _cpuinfo()[1]


def bf16_unit(flags=None):
    """The CPU's bfloat16 hardware ('amx_bf16' or 'avx512_bf16'), or None where it has none."""
    flags = cpu_flags() if flags is None else flags
    return next((f for f in BF16_FLAGS if f in flags), None)


def describe():
    """'AMD EPYC, 2 cores (avx2 avx512f avx512_bf16)': the line every speed figure names."""
    shown = " ".join(f for f in SHOWN_FLAGS if f in cpu_flags()) or "no AVX2"
    return f"{cpu_name()}, {os.cpu_count()} cores ({shown})"
