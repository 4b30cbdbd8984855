"""`speedrun bench --compile-only`: every Triton kernel compiled by Triton's real compiler (its own ptxas) for a
GPU target on this CPU machine, at the trainer's record launches and every autotune config it can pick. Runs in
a child process without TRITON_INTERPRET (the interpreter replaces the compiler)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[1]
ENV = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"PYTHONPATH": str(ROOT)}
SHARED_KIB = {"sm_90": 227, "sm_80": 163}  # the most one block may use (opt-in) on H100 and A100


def compile_only(*argv, code=None):
    cmd = [sys.executable, "-c", code, *argv] if code else [sys.executable, "-m", "harness.cli", *argv]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
def test_every_kernel_compiles_for_the_target_without_a_spill(arch):
    """Exit 0, and every launch the trainer makes at gpt2-small's per-rank shapes (xxt's two Polar Express
    products per Muon group, softcap_ce forward and both backward stores, relu2_linear forward/dx/dW in each
    autotune config it may pick on this target) compiled: registers, no spill, shared memory within the GPU's;
    wgmma exactly on Hopper; Triton and ptxas versions named."""
    p = compile_only("bench", "--compile-only", "--arch", arch, "--json")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    rep = json.loads(p.stdout)
    rows = rep["results"]
    assert rep["ok"] and rep["arch"] == arch and rep["triton"] and rep["ptxas"].startswith("release ")
    assert {r["kernel"] for r in rows} == {"xxt", "softcap_ce", "relu2_linear"}
    assert sum(r["kernel"] == "softcap_ce" for r in rows) == 3 and sum(r["kernel"] == "xxt" for r in rows) == 4
    relu2 = [r for r in rows if r["kernel"] == "relu2_linear"]
    assert {r["launch"].rsplit(": ", 1)[1] for r in relu2} == {"forward", "dx", "dW (dpreᵀ strided)"}
    assert all(r["ok"] and 0 < r["registers"] <= 255 and r["spill_store_bytes"] == r["spill_load_bytes"] == 0
               and r["shared_bytes"] <= SHARED_KIB[arch] * 1024 for r in rows), rows
    mm = [r for r in rows if r["kernel"] in ("xxt", "relu2_linear")]
    assert all(r["wgmma"] == (arch == "sm_90") and r["mma"] for r in mm)


def test_a_spilling_config_the_autotuner_could_pick_fails_the_bench():
    """With relu2_linear's measured spill table emptied (the autotuner may then pick the 4-warp 128×128 tile),
    the compile-only bench exits 1 and names the spilling configs: the pruning is what keeps sm_90 green."""
    code = ("import sys; import kernels.relu2_linear as r; r._SPILLED.clear(); from harness.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    p = compile_only("bench", "--compile-only", "--arch", "sm_90", "--json", "relu2_linear", code=code)
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-3000:]
    rep = json.loads(p.stdout)
    bad = [r for r in rep["results"] if not r["ok"]]
    assert bad and all(r["config"].startswith("128×128×64 warps=4") and "spills" in r["error"] for r in bad)
    assert any("FAILED: relu2_linear" in n for n in rep["notes"])


def test_compile_only_flags():
    """--arch without --compile-only, or an unknown arch, is bad usage (exit 2) naming the flag."""
    p = compile_only("bench", "--arch", "sm_90")
    assert p.returncode == 2 and "--arch" in p.stderr
    p = compile_only("bench", "--compile-only", "--arch", "sm_70")
    assert p.returncode == 2 and "--arch" in p.stderr
