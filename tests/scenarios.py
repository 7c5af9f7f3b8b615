"""One `scenario_<name>(out, *args)` function of a test module, run in a fresh Python process (another
backend, or devices set before the backend starts); it asserts there and leaves its figures in
OUT/result.json, which the test reads back."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))


def run_python(code, args, env, timeout=900):
    """`python -c code args` in a fresh process at the repository's root, asserted to exit 0."""
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    return proc


def run_scenario(module, scenario, out, args, env, preamble=""):
    """preamble: Python run first in the new process (e.g. making TensorFlow unimportable)."""
    code = (f"import sys; {preamble}sys.path[:0] = [{ROOT!r}, {HERE!r}]; import {module} as t; "
            f"t.scenario_{scenario}(*sys.argv[1:])")
    run_python(code, [out, *args], env)
    with open(os.path.join(out, "result.json")) as f:
        return json.load(f)
