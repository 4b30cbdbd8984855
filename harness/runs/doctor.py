"""`speedrun doctor [--track T] [--json] [--quick]`: can this node run a record, and how well?

Users rent 8×H100 by the hour; before an attempt they want to know the node is sound. One line per
check, each with a figure and a verdict (ok, slow, broken; skipped says why), exit 0 when every line is
ok or skipped, 1 otherwise:

  environment    torch, triton, CUDA, driver, GPU model/count and clocks (nvidia-smi); CPU and threads
  hardware       what the track requires (GPU model and count) against what is here
  memory         the preset's peak memory per rank for one training step, estimated on fake tensors (the
                 trainer's --estimate-memory: FakeTensorMode and torch's MemTracker, nothing allocated), against
                 this node's GPU memory, the track's GPU model's, or (a CPU track) the host's RAM
  matmul bf16    TFLOP/s of a large square matmul, as % of the device's dense peak (fp8 too on sm89+)
  all-reduce     bus bandwidth across this node's GPUs (NCCL), or 2 gloo ranks on a CPU machine
  driver         whether the NVIDIA driver loads the cubins this Triton builds (its ptxas's CUDA release sets the
                 minimum driver), and drivers below 580 flagged slow (a silent ≈35 % slowdown seen on them)
  kernel <name>  correctness at the preset's real shapes, then kernel vs torch fwd+bwd time (the
                 trainer's own start-up check, read from its output); on CPU, correctness under
                 Triton's interpreter at small shapes
  preset         the track's preset for a few dozen steps on synthetic shards in the track's format
                 (no download): compile (warm-up) time, graphs, recompiles, graph breaks, step time
                 after warm-up, peak memory, finite loss

torch is imported inside `run` only (like `speedrun bench`); the preset runs as a child process.
"""
from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.runs import launch as launcher
from harness.runs.proc import stream
from harness.core.track import load_track, nproc, repo_root

# What counts as slow (data, not code paths): a node below these is sound but will not make a record's time.
SLOW = {"matmul_bf16_pct": 60.0, "matmul_fp8_pct": 45.0, "allreduce_busbw_gbps": 200.0}
STEPS = {"cuda": 30, "cpu": 20}  # preset steps: a few dozen past the warm-up
# The oldest driver each CUDA major release's binaries load on (NVIDIA's compatibility table: 12.x runs on 525+
# through minor-version compatibility, 13.x needs 580+). Triton 3.9 builds sm_90+ with CUDA 13's ptxas.
MIN_DRIVER = {11: 450, 12: 525, 13: 580}
SLOW_DRIVER = 580  # below it the community has seen a silent ≈35 % slowdown of the same record script
GPU_GIB = {"H200": 139.8, "H100": 79.6, "A100": 79.2}  # usable memory of the 141/80 GB parts, by track model
FITS = 0.9  # the estimate leaves out allocator slack and compile buffers: keep a tenth free


@dataclass
class Line:
    name: str
    verdict: str           # ok | slow | broken | skipped
    figure: str
    detail: dict = field(default_factory=dict)


def _lines_ok(lines: list[Line]) -> bool:
    return all(x.verdict in ("ok", "skipped") for x in lines)


def run(track_name: str, *, make_shards, quick: bool = False, say=print) -> dict:
    """`make_shards(track, folder, train_tokens) -> folder`: the shards the preset run trains on (the CLI
    hands in harness.data.stand_in: this package never makes data)."""
    track = load_track(track_name)
    import torch

    cuda = torch.cuda.is_available() and track["hardware"]["accelerator"] != "cpu"
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported
    from kernels import node

    device = torch.device("cuda" if cuda else "cpu")
    lines: list[Line] = []
    t0 = time.monotonic()

    env = node.describe(device)
    gpus = env.get("gpus") or []
    what = (f"{len(gpus)}× {gpus[0]['name']}" + (f" @ {gpus[0].get('sm_clock_mhz'):.0f}/{gpus[0].get('max_sm_clock_mhz'):.0f} MHz"
                                                 if gpus and gpus[0].get("max_sm_clock_mhz") else "")) if gpus \
        else f"CPU {env['cpu']}, {env['cpu_threads']} threads"
    lines.append(Line("environment", "ok", f"torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}; {what}", env))
    say(_show(lines[-1]))

    hw = track["hardware"]
    if hw.get("accelerator") == "cpu":
        lines.append(Line("hardware", "ok", f"the track runs on any CPU ({env['cpu_threads']} threads here)"))
    else:
        count_ok = len(gpus) == hw["count"]
        model_ok = bool(gpus) and all(re.search(rf"\b{re.escape(hw['model'])}\b", g["name"]) for g in gpus)
        lines.append(Line("hardware", "ok" if count_ok and model_ok else "broken",
                          f"{what}; the track requires {hw['count']}× {hw['model']}",
                          {"gpus": len(gpus), "required": hw["count"], "model": hw["model"]}))
    say(_show(lines[-1]))

    lines.append(memory_check(track, gpus, env))
    say(_show(lines[-1]))

    for dtype in ("bf16", "fp8"):
        if dtype == "fp8" and not (cuda and torch.cuda.get_device_capability(device) >= (8, 9)):
            lines.append(Line("matmul fp8", "skipped", "no FP8 tensor cores here (sm89+)"))
        else:
            try:
                m = node.matmul(device, dtype, seconds=0.5 if quick else 1.5)
            except Exception as e:  # noqa: BLE001  (a broken device is a finding, not a crash)
                lines.append(Line(f"matmul {dtype}", "broken", f"{type(e).__name__}: {str(e)[:160]}"))
            else:
                pct = m["pct_peak"]
                slow = pct is not None and pct < SLOW[f"matmul_{dtype}_pct"]
                lines.append(Line(f"matmul {dtype}", "slow" if slow else "ok",
                                  f"{m['tflops']:.1f} TFLOP/s at {m['side']}³"
                                  + (f" = {pct:.0f} % of {m['peak_tflops']:.0f} peak" if pct is not None else " (no peak known)"),
                                  m))
        say(_show(lines[-1]))

    if cuda:
        cap = torch.cuda.get_device_capability(device)
        lines.append(driver_check(gpus[0].get("driver") if gpus else None, *ptxas_for(cap[0] * 10 + cap[1])))
        say(_show(lines[-1]))

    world = torch.cuda.device_count() if cuda else 2
    if cuda and world < 2:
        lines.append(Line("all-reduce", "skipped", "one GPU: nothing to all-reduce across"))
    else:
        try:
            r = node.allreduce_spawned(world, device.type, 256 if cuda else 16)
        except Exception as e:  # noqa: BLE001
            lines.append(Line("all-reduce", "broken", f"{type(e).__name__}: {str(e)[:160]}"))
        else:
            slow = cuda and r["busbw_gbps"] < SLOW["allreduce_busbw_gbps"]
            lines.append(Line("all-reduce", "slow" if slow else "ok",
                              f"{r['busbw_gbps']:.1f} GB/s bus bandwidth, {r['ranks']} ranks ({r['backend']}), "
                              f"{r['bytes'] / 2 ** 20:.0f} MiB in {r['ms']:.2f} ms", r))
    say(_show(lines[-1]))

    if not cuda:  # the Triton kernels on CPU: correctness under the interpreter (their CPU timings mean nothing)
        import importlib

        from kernels import NAMES, capability

        for name in NAMES:
            try:
                mod = importlib.import_module(f"kernels.{name}")
                out, err, tol = capability.worst(mod, capability.errors(mod, device))
            except Exception as e:  # noqa: BLE001
                if isinstance(e, ModuleNotFoundError) and e.name == "triton":
                    lines.append(Line(f"kernel {name}", "skipped", "Triton is not installed (a CPU install needs "
                                      "pip install -e '.[dev]' for its interpreter)"))
                else:
                    lines.append(Line(f"kernel {name}", "broken", f"{type(e).__name__}: {str(e)[:160]}"))
            else:
                lines.append(Line(f"kernel {name}", "ok" if err <= tol else "broken",
                                  f"matches its reference under Triton's interpreter (small shapes): {out} error "
                                  f"{err:.1e} {'≤' if err <= tol else '>'} {tol:.0e}; timed only on a GPU",
                                  {"error": err, "tol": tol}))
            say(_show(lines[-1]))

    lines += preset_run(track, device.type, make_shards, quick=quick, say=say)
    out = {"track": track["name"], "device": device.type, "seconds": round(time.monotonic() - t0, 1),
           "ok": _lines_ok(lines), "lines": [vars(x) for x in lines]}
    return out


# ---- memory, before renting ---------------------------------------------------------------------------

def memory_check(track: dict, gpus: list[dict], env: dict) -> Line:
    """The trainer's fake-tensor estimate of the preset's peak per rank (a child process: the harness never
    imports the trainer), against what each rank will have."""
    import json
    import subprocess
    import sys

    gpu_track = track["hardware"]["accelerator"] != "cpu"
    ranks = nproc(track)
    cmd = [sys.executable, str(repo_root() / "train_gpt.py"), "--preset", track["preset"], "--estimate-memory", str(ranks)]
    if not gpu_track:
        cmd.append("--cpu-path")
    env_vars = {**os.environ, "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", "0" if gpus else "1")}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=repo_root(), env=env_vars)
    except (subprocess.TimeoutExpired, OSError) as e:
        return Line("memory", "broken", f"the estimate did not run ({type(e).__name__}: {e})")
    found = [x for x in p.stdout.splitlines() if x.startswith("MEMORY ")]
    if p.returncode != 0 or not found:
        tail = (p.stderr.strip().splitlines() or [""])[-1][:200]
        return Line("memory", "broken", f"the estimate failed (exit {p.returncode}: {tail})")
    est = json.loads(found[-1][len("MEMORY "):])
    need = est["peak_bytes"] / 2 ** 30
    if not gpu_track:
        have, what = _host_ram_gib(), "this host's RAM"
    elif gpus and gpus[0].get("memory_mib"):
        have, what = gpus[0]["memory_mib"] / 1024, f"this node's {gpus[0]['name']}"
    else:
        model = track["hardware"]["model"]
        have, what = GPU_GIB.get(model), f"an {model}"
    est.update(capacity_gib=have, fits=None if have is None else need <= FITS * have)
    fig = (f"≈{need:.1f} GiB a rank at {track['preset']} on {ranks} rank(s) ({est['path']} path, kernels: "
           f"{', '.join(est['kernels']) or 'none'}; fake tensors)")
    if have is None:
        return Line("memory", "ok", fig + "; no capacity known to compare", est)
    return Line("memory", "ok" if est["fits"] else "broken",
                fig + f"; {what} has {have:.1f} GiB: " + ("fits" if est["fits"] else
                                                          f"does not fit with a {1 - FITS:.0%} margin"), est)


def _host_ram_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError, AttributeError):
        return None


# ---- the driver against what Triton builds -----------------------------------------------------------

def ptxas_for(arch: int) -> tuple[str | None, str]:
    """(the version text of the ptxas Triton uses for `arch`, or None, and what was asked)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas_version
        return get_ptxas_version(arch).strip(), f"Triton's ptxas for sm_{arch}"
    except Exception as e:  # noqa: BLE001  (no Triton, no ptxas: said on the line)
        return None, f"Triton's ptxas for sm_{arch} not found ({type(e).__name__}: {str(e)[:120]})"


def driver_check(driver: str | None, ptxas: str | None, what: str = "ptxas") -> Line:
    """broken: the driver is older than the CUDA release of the ptxas that builds the kernels needs (the cubins
    would not load: every Triton kernel, torch.compile's included, fails); slow: below SLOW_DRIVER; ok."""
    m = re.search(r"release (\d+)\.(\d+)", ptxas or "")
    try:
        major = int((driver or "").split(".")[0])
    except ValueError:
        major = None
    if major is None:
        return Line("driver", "broken", f"no NVIDIA driver version from nvidia-smi ({driver!r})", {"driver": driver})
    detail = {"driver": driver, "ptxas": ptxas, "cuda": m and f"{m[1]}.{m[2]}"}
    if not m:
        return Line("driver", "slow" if major < SLOW_DRIVER else "ok",
                    f"driver {driver}; {what}: version unknown, so whether it loads Triton's cubins is unchecked"
                    + (f"; below {SLOW_DRIVER}: a silent ≈35 % slowdown has been seen on such drivers" if major < SLOW_DRIVER else ""),
                    detail)
    need = MIN_DRIVER.get(int(m[1]), SLOW_DRIVER)
    detail["needs"] = need
    if major < need:
        return Line("driver", "broken", f"driver {driver} cannot load what this Triton builds: its {what} is CUDA "
                    f"{m[1]}.{m[2]}, which needs driver ≥ {need}; upgrade the driver (or use a Triton whose ptxas is "
                    f"CUDA ≤ the driver's)", detail)
    if major < SLOW_DRIVER:
        return Line("driver", "slow", f"driver {driver} loads CUDA {m[1]}.{m[2]} cubins (needs ≥ {need}), but is below "
                    f"{SLOW_DRIVER}: a silent ≈35 % slowdown of the same script has been seen on such drivers", detail)
    return Line("driver", "ok", f"driver {driver} loads CUDA {m[1]}.{m[2]} cubins ({what}; needs ≥ {need})", detail)


# ---- the preset on synthetic shards -------------------------------------------------------------------

KERNEL_LINE = re.compile(r"^kernels: (\w+) (on|off|failed|differs|matched)")


def preset_run(track: dict, device_type: str, make_shards, *, quick: bool, say) -> list[Line]:
    steps = STEPS[device_type] // (2 if quick else 1)
    compiled = not (quick and device_type == "cpu")  # a CPU compile alone takes ≈ 40 s
    lines: list[Line] = []
    with tempfile.TemporaryDirectory(prefix="speedrun-doctor-") as tmp:
        tmp = Path(tmp)
        shards = make_shards(track, tmp / "data", train_tokens=(steps + 20) * 8 * 64 * 1024)
        nproc = launcher.Launch(nproc=1)
        cmd = nproc.argv(str(repo_root() / "train_gpt.py")) + [
            "--preset", track["preset"], "--data-dir", str(shards), "--seed", "0", "--run-id", "doctor",
            "--log-dir", str(tmp), "--max-steps", str(steps), "--val-every", "0"] + ([] if compiled else ["--no-compile"])
        watch = launcher.Watch(steps)
        kernel_lines: list[str] = []

        def on_line(line, rank):
            watch.feed(line)
            if KERNEL_LINE.match(line):
                kernel_lines.append(line)

        t0 = time.monotonic()
        done = stream(cmd, launcher.trainer_env(track), on_line, cwd=repo_root(), timeout=600)
        wall = time.monotonic() - t0
    for k in kernel_lines:
        m = KERNEL_LINE.match(k)
        name, state = m[1], m[2]
        verdict = {"on": "ok", "off": "skipped", "failed": "broken", "differs": "broken", "matched": "slow"}[state]
        lines.append(Line(f"kernel {name}", verdict, k.split(": ", 1)[1]))
        say(_show(lines[-1]))
    r = watch.result
    if done.code != 0 or not r:
        why = "timed out after 600 s" if done.timed_out else f"exit {done.code}"
        lines.append(Line("preset", "broken", f"{track['preset']} did not finish ({why}): " + " | ".join(list(done.tail)[-3:]),
                          {"tail": list(done.tail)[-20:]}))
        say(_show(lines[-1]))
        return lines
    finite = isinstance(r.get("val_loss"), (int, float)) and r["val_loss"] == r["val_loss"] and r["val_loss"] < 1e9
    bad = [] if finite else ["the loss is not finite"]
    if r.get("recompiles"):
        bad.append(f"{r['recompiles']} recompile(s) after the warm-up")
    graphs = (f"{r.get('graphs') or 0} graph(s), {r.get('recompiles') or 0} recompile(s), {r.get('graph_breaks') or 0} "
              "graph break(s)") if r.get("graphs") is not None else "not compiled (--quick on CPU)"
    fig = (f"{r['steps']} steps of {track['preset']}: step {r['step_avg_ms']:.1f} ms after a {r.get('warmup_s', 0):.0f} s "
           f"warm-up; {graphs}; peak {r['peak_memory_mib']:,} MiB, loss {r['val_loss']:.3f}; {wall:.0f} s in all")
    lines.append(Line("preset", "broken" if bad else "ok", fig + ("; " + "; ".join(bad) if bad else ""), r))
    say(_show(lines[-1]))
    return lines


# ---- for people -----------------------------------------------------------------------------------------

COLOR = {"ok": "green", "slow": "yellow", "broken": "red", "skipped": "dim"}


def _show(x: Line) -> str:
    return f"{x.verdict.upper():>7}  {x.name:<20} {x.figure}"


def render(rep: dict, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"speedrun doctor --track {rep['track']} ({rep['device']}, {rep['seconds']} s)")
    for col in ("check", "verdict", "figure"):
        t.add_column(col, overflow="fold")
    for x in rep["lines"]:
        t.add_row(x["name"], f"[{COLOR[x['verdict']]}]{x['verdict']}[/]", escape(x["figure"]))
    console.print(t)
    console.print("[bold green]SOUND[/]: every check passed" if rep["ok"] else
                  "[bold red]NOT READY[/]: " + ", ".join(f"{x['name']} {x['verdict']}" for x in rep["lines"]
                                                       if x["verdict"] not in ("ok", "skipped")))
