"""precision = "auto": mixed (bfloat16) only where the CPU computes bfloat16 in hardware, chosen when a
run starts and kept in its config.json, so that a resumed or evaluated run uses what it trained in."""
import json

import pytest

import hardware
import model
import network
import rundir

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16 avx512vl
processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16 avx512vl
"""


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "avx512f", "amx_bf16", "amx_tile", "avx512_bf16"}, ("mixed", "amx_bf16")),
    ({"avx2", "avx512f", "avx512_bf16"}, ("mixed", "avx512_bf16")),
    ({"avx2", "avx512f"}, ("float32", "no bfloat16 hardware")),  # AVX-512 without BF16
    ({"avx", "avx2", "fma"}, ("float32", "no bfloat16 hardware")),
    (set(), ("float32", "no bfloat16 hardware")),
])
def test_auto_is_mixed_only_on_bfloat16_hardware(flags, expected):
    precision, why = network.resolve_precision("auto", frozenset(flags))
    assert precision == expected[0] and expected[1] in why


def test_a_named_precision_is_kept_and_a_wrong_one_refused():
    for name in ("float32", "mixed"):
        assert network.resolve_precision(name, frozenset({"amx_bf16"}))[0] == name
        assert network.resolve_precision(name, frozenset())[0] == name
    with pytest.raises(ValueError, match="precision must be one of auto, float32, mixed, got 'bf16'"):
        network.resolve_precision("bf16")


def test_the_cpu_is_read_from_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    name, flags = hardware._cpuinfo(str(path))
    assert name == "AMD EPYC 9R14" and {"avx2", "avx512_bf16"} <= flags and "amx_bf16" not in flags
    assert hardware.bf16_unit(flags) == "avx512_bf16" and hardware.bf16_unit(frozenset({"avx2"})) is None
    assert hardware._cpuinfo(str(tmp_path / "absent"))[1] == frozenset()


def test_a_new_run_records_what_auto_chose_here(demo_h5, tmp_path):
    config = model.parse_config(["--data", str(demo_h5), "--out", str(tmp_path / "run")])
    assert config["precision"] == "auto"  # model.py's block
    config, _ = model.new_run(config, [])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    chosen, why = network.resolve_precision("auto")
    assert saved["precision"] == "auto" and saved["precision_used"] == chosen and saved["precision_reason"] == why
    assert rundir.training_precision(saved) == chosen
    # a run that resumes on another machine goes on in what it trained in; an old run has no precision_used
    assert rundir.training_precision({**saved, "precision_used": "mixed"}) == "mixed"
    assert rundir.training_precision({"precision": "float32"}) == "float32"
    assert rundir.result_suffix({**saved, "precision_used": "mixed"}, saved["select"], "mixed") == ""
    assert rundir.result_suffix({**saved, "precision_used": "mixed"}, saved["select"], "float32") == "-float32"
