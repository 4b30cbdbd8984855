"""`speedrun doctor`: one line per check of this node, each with a figure and a verdict, exit 0 when the
node is sound. On this CPU machine it runs the CPU equivalents: matmul TFLOP/s, a 2-rank gloo all-reduce,
every kernel's correctness under Triton's interpreter, and the tiny preset on its synthetic shards."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_doctor_on_cpu_reports_every_check(tmp_path):
    """Every check appears once with a verdict; the CPU has no FP8 (skipped), the all-reduce ran on 2 gloo
    ranks, the kernels match under the interpreter, the preset ran on synthetic shards with a finite loss
    and no recompile; `--json` is the report, human progress goes to stderr; exit 0."""
    if torch.cuda.is_available():
        pytest.skip("the CPU path")
    p = subprocess.run([sys.executable, "-m", "harness.cli", "doctor", "--track", "tiny-cpu", "--quick", "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    rep = json.loads(p.stdout)
    lines = {x["name"]: x for x in rep["lines"]}
    assert {"environment", "hardware", "matmul bf16", "matmul fp8", "all-reduce", "preset"} <= set(lines)
    assert {f"kernel {k}" for k in ("xxt", "softcap_ce", "fp8_head", "relu2_linear")} <= set(lines)
    assert lines["matmul fp8"]["verdict"] == "skipped" and lines["matmul bf16"]["detail"]["tflops"] > 0
    assert lines["all-reduce"]["detail"]["ranks"] == 2 and lines["all-reduce"]["detail"]["backend"] == "gloo"
    pre = lines["preset"]["detail"]
    assert lines["preset"]["verdict"] == "ok" and pre["steps"] == 10 and pre["val_loss"] < 5.0
    assert rep["ok"] and rep["seconds"] > 0 and "PASS" not in p.stdout and "preset" in p.stderr
