"""`speedrun doctor`: one line per check of this node, each with a figure and a verdict, exit 0 when the
node is sound. On this CPU machine it runs the CPU equivalents: matmul TFLOP/s, a 2-rank gloo all-reduce,
every kernel's correctness under Triton's interpreter, and the tiny preset on its synthetic shards."""
import json
import os
import re
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


CUDA13 = "Cuda compilation tools, release 13.4, V13.4.59\nBuild cuda_13.4.r13.4/compiler.38657139_0"
CUDA12 = "Cuda compilation tools, release 12.9, V12.9.86"


def test_driver_check_against_the_ptxas_that_builds_the_kernels():
    """A driver older than the CUDA release of Triton's ptxas needs cannot load its cubins (broken); one that
    loads them but is below 580 is flagged slow; 580+ is ok; no driver version is broken."""
    from harness.runs.doctor import driver_check

    assert driver_check("570.124.06", CUDA13).verdict == "broken"
    assert "needs driver ≥ 580" in driver_check("570.124.06", CUDA13).figure
    assert driver_check("575.57.08", CUDA12).verdict == "slow" and "35 %" in driver_check("575.57.08", CUDA12).figure
    assert driver_check("580.65.06", CUDA13).verdict == "ok" and driver_check("590.1", CUDA12).verdict == "ok"
    assert driver_check("520.1", CUDA12).verdict == "broken"
    assert driver_check(None, CUDA13).verdict == "broken" and driver_check("575.1", None).verdict == "slow"


def test_driver_version_comes_from_nvidia_smi_and_ptxas_from_triton(tmp_path, monkeypatch):
    """On a GPU node the line reads the driver from nvidia-smi (here a fake one on PATH) and the ptxas version
    of the Triton that will compile (this wheel's: CUDA 13 for sm_90, whose cubins need 580+)."""
    pytest.importorskip("triton")
    from harness.runs.doctor import driver_check, ptxas_for
    from kernels import node

    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, NVIDIA H100 80GB HBM3, 1980, 1980, 81559, 570.86.15, 700.00, 35'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    gpus = node.gpus()
    assert gpus[0]["driver"] == "570.86.15"
    ptxas, what = ptxas_for(90)
    line = driver_check(gpus[0]["driver"], ptxas, what)
    major = int(re.search(r"release (\d+)", ptxas)[1])
    assert line.verdict == ("broken" if major >= 13 else "slow") and line.detail["driver"] == "570.86.15"


@pytest.mark.slow
def test_memory_estimate_per_rank_on_fake_tensors():
    """The doctor's memory line, on this CPU: the gpt2-small preset's peak a rank, estimated on fake tensors
    (nothing allocated) on its CUDA path with the kernels, lands near the issue's ≈32 GiB and fits an H100
    (80 GB) with a tenth spare; one rank holds more (the whole optimizer state); the tiny preset fits any host."""
    from harness.runs.doctor import memory_check
    from harness.core.track import load_track

    line = memory_check(load_track("gpt2-small"), [], {})
    est = line.detail
    print(line.figure)
    assert line.verdict == "ok" and est["ranks"] == 8 and est["path"] == "cuda" and 28 < est["peak_bytes"] / 2**30 < 45
    assert "softcap_ce" in est["kernels"] and est["fits"] and est["capacity_gib"] == 79.6
    tiny = memory_check(load_track("tiny-cpu"), [], {})
    assert tiny.verdict == "ok" and tiny.detail["path"] == "cpu" and tiny.detail["peak_bytes"] < 2**30
