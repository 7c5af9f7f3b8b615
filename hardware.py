"""What this machine computes fast: the CPU's name and vector flags, read once from /proc/cpuinfo.

`precision = "auto"` (model.py) chooses by them: bfloat16 pays on a CPU only where it is computed in
hardware (AMX tiles, or AVX-512 BF16 dot products, through TensorFlow's oneDNN kernels); on an
AVX2-only CPU it is emulated and slower than float32 (docs/performance.md). ONEDNN_MAX_CPU_ISA, oneDNN's own
switch, caps the units its kernels use (benchmark.py --isa runs one machine as several kinds of CPU);
the flags read here honour it. Standard library only.
"""
import functools
import os
import platform

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # strongest first
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
# oneDNN's ISA levels (ONEDNN_MAX_CPU_ISA), lowest first, and the CPU flags each level is the first to use:
# a cap below a flag's level means oneDNN's kernels do not use that unit, whatever /proc/cpuinfo says.
ISA_LEVELS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
              "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16")
ISA_ALIASES = {"AVX10_1_512": "AVX512_CORE_FP16", "AVX10_1_512_AMX": "AVX512_CORE_AMX",
               "AVX10_1_512_AMX_FP16": "AVX512_CORE_AMX_FP16"}
FLAG_LEVEL = {"avx2": "AVX2", "avx512f": "AVX512_CORE", "avx512_bf16": "AVX512_CORE_BF16",
              "amx_bf16": "AVX512_CORE_AMX", "amx_tile": "AVX512_CORE_AMX"}


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


def isa_cap(environ=None):
    """oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA, or the older DNNL_MAX_CPU_ISA) as one of ISA_LEVELS, or
    None where none is set (ALL, DEFAULT, or a name oneDNN does not know, which it ignores)."""
    environ = os.environ if environ is None else environ
    name = (environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    name = ISA_ALIASES.get(name, name)
    return name if name in ISA_LEVELS else None


def usable_flags(flags, cap):
    """The flags oneDNN's kernels may use under an ISA cap: those of a level above it are dropped."""
    if cap is None:
        return frozenset(flags)
    top = ISA_LEVELS.index(cap)
    return frozenset(f for f in flags if ISA_LEVELS.index(FLAG_LEVEL.get(f, "SSE41")) <= top)


def cpu_flags():
    """The CPU's flags that oneDNN may use: /proc/cpuinfo's, less those above ONEDNN_MAX_CPU_ISA."""
    return usable_flags(_cpuinfo()[1], isa_cap())


def bf16_unit(flags=None):
    """The CPU's bfloat16 hardware ('amx_bf16' or 'avx512_bf16'), or None where it has none."""
    flags = cpu_flags() if flags is None else flags
    return next((f for f in BF16_FLAGS if f in flags), None)


def describe():
    """'AMD EPYC, 2 cores (avx2 avx512f avx512_bf16)': the line every speed figure names."""
    shown = " ".join(f for f in SHOWN_FLAGS if f in _cpuinfo()[1]) or "no AVX2"
    cap = isa_cap()
    capped = f"; oneDNN capped at {cap} (ONEDNN_MAX_CPU_ISA)" if cap else ""
    return f"{cpu_name()}, {os.cpu_count()} cores ({shown}{capped})"
