"""`speedrun bench`: run the kernel benchmarks (kernels/bench.py: checks, then timings), store the results
under records/_bench/<device>/<date>-<commit>.json, compare them with an earlier file, and render them.

    speedrun bench                          # every kernel; record shapes on CUDA, small ones on CPU
    speedrun bench xxt softcap_ce --shapes record --out results.json
    speedrun bench --compare records/_bench/nvidia-h100-80gb-hbm3/<earlier>.json   # exit 1 if slower

torch is imported only inside `run` (kernels/bench.py), so the rest of the harness starts without it.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from harness.core.errors import InputError
from harness.core.files import atomic_write
from kernels import ALL


def run(names, *, shapes: str | None, compiled: bool, compare_with: str | None, threshold: float, save_to: Path | None,
        out: str | None, say) -> tuple[bool, dict]:
    """Check and time the kernels; (failed, results document). The document gains `commit`, `compare`
    (rows against `compare_with`, and whether anything regressed past `threshold`) and `notes`."""
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise InputError(f"bench: unknown kernel(s) {', '.join(unknown)}; choose from {', '.join(ALL)}")
    earlier = load_results(compare_with) if compare_with else None
    from kernels import bench  # torch (and triton), lazily

    doc = bench.run(names or ALL, shapes=shapes, compiled=compiled, say=say)
    doc["commit"] = git_commit(Path(__file__).resolve().parent.parent)
    notes, regressed = [], False
    if earlier is not None:
        if earlier["device"]["name"] != doc["device"]["name"] or earlier.get("shapes") != doc["shapes"]:
            notes.append(f"note: --compare {compare_with} was measured on {earlier['device']['name']} "
                         f"({earlier.get('shapes')} shapes); this run: {doc['device']['name']} ({doc['shapes']} shapes)")
        rows, regressed = compare(doc, earlier, threshold)
        doc["compare"] = dict(file=compare_with, threshold=threshold, rows=rows, regressed=regressed)
    if save_to is not None:
        notes.append(f"saved {save(doc, save_to)}")
    if out:
        atomic_write(out, json.dumps(doc, indent=2) + "\n")
        notes.append(f"wrote {out}")
    wrong = [r["kernel"] for r in doc["results"] if r["status"] == "WRONG" or r["status"].startswith("failed")]
    if wrong:
        notes.append(f"FAILED: {', '.join(wrong)} did not match the reference (not timed)")
    if regressed:
        notes.append(f"REGRESSED: slower than {compare_with} by more than {threshold:.0%}")
    doc["notes"] = notes
    return bool(wrong or regressed), doc


def compile_only(names, *, arch: str, shapes: str | None, say) -> tuple[bool, dict]:
    """Every kernel compiled for `arch` without a GPU (kernels/compile.py); (failed, report). Failed: a compile
    error, or a spill in a config the trainer can select."""
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise InputError(f"bench: unknown kernel(s) {', '.join(unknown)}; choose from {', '.join(ALL)}")
    import importlib.util

    if importlib.util.find_spec("triton") is None:  # found, not imported: TRITON_INTERPRET must go first
        raise InputError("bench --compile-only needs Triton: pip install -e '.[dev]'")
    from kernels import compile as kc  # torch and triton, lazily

    try:
        rep = kc.compile_all(arch, shapes=shapes or "record", names=names or None, say=say)
    except ValueError as e:
        raise InputError(str(e)) from None
    bad = [f"{r['kernel']} {r['launch']} [{r['config']}]: {r['error']}" for r in rep["results"] if not r["ok"]]
    rep["notes"] = [f"FAILED: {b}" for b in bad] + ([] if bad else [f"every config compiled for {arch} without a spill"])
    return bool(bad) or not rep["results"], rep


def render_compile(rep: dict, console) -> None:
    from rich.table import Table

    t = Table(title=f"speedrun bench --compile-only · {rep['arch']} · {rep['shapes']} shapes · triton {rep['triton']}"
                    f" · ptxas {rep['ptxas']}")
    for col in ("kernel", "launch", "config", "ok", "regs", "spills", "shared", "wgmma", "TMA", "s"):
        t.add_column(col, justify="right" if col in ("regs", "spills", "shared", "s") else "left")
    for r in rep["results"]:
        has = "registers" in r
        t.add_row(r["kernel"], r["launch"], r["config"], "[green]ok[/]" if r["ok"] else f"[red]{r['error']}[/]",
                  str(r["registers"]) if has else "", f"{r['spill_store_bytes']}+{r['spill_load_bytes']} B" if has else "",
                  f"{r['shared_bytes'] // 1024} KiB" if has else "", ("yes" if r.get("wgmma") else "no") if has else "",
                  ("yes" if r.get("tma") else "no") if has else "", f"{r.get('seconds', 0):.1f}")
    console.print(t)
    for note in rep.get("notes", []):
        console.print(note, highlight=False, markup=False)


def git_commit(root: Path) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (sha or "unknown") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:80] or "device"


def save(doc: dict, root: Path) -> Path:
    """records/_bench/<device>/<date>-<commit>.json, written atomically."""
    folder = root / "records" / "_bench" / slug(doc["device"]["name"])
    stamp = doc["date"].replace(":", "").replace("-", "")[:15]
    path = folder / f"{stamp}-{doc['commit'][:12]}.json"
    atomic_write(path, json.dumps(doc, indent=2) + "\n")
    return path


def compare(new: dict, old: dict, threshold: float) -> tuple[list[dict], bool]:
    """Per (kernel, shape, impl) found in both: new / old median ms. Regressed when a ratio > 1 + threshold."""
    before = {(r["kernel"], r["shape"], i): t["ms"] for r in old.get("results", []) for i, t in r.get("impls", {}).items()}
    out, regressed = [], False
    for r in new["results"]:
        for impl, t in r["impls"].items():
            key = (r["kernel"], r["shape"], impl)
            if key in before:
                ratio = t["ms"] / before[key]
                slower = ratio > 1 + threshold
                regressed |= slower
                out.append(dict(kernel=r["kernel"], shape=r["shape"], impl=impl, old_ms=before[key], new_ms=t["ms"],
                                ratio=ratio, regressed=slower))
    return out, regressed


def load_results(path: str) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"--compare {path}: no such file")
    except json.JSONDecodeError as e:
        raise InputError(f"--compare {path}: not JSON ({e.msg} at line {e.lineno})")
    if not isinstance(doc, dict) or doc.get("kind") != "speedrun-bench" or not isinstance(doc.get("results"), list):
        raise InputError(f"--compare {path}: not a `speedrun bench` results file")
    return doc


def render(doc: dict, console) -> None:
    from rich.table import Table

    comparison = (doc.get("compare") or {}).get("rows")
    d = doc["device"]
    t = Table(title=f"speedrun bench · {d['name']} · {doc['shapes']} shapes · torch {doc['versions']['torch']}"
                    f" · triton {doc['versions']['triton']}")
    for col in ("kernel", "shape", "check", "impl", "ms (p20–p80)", "throughput", "% peak", "× eager", "× compiled"):
        t.add_column(col, justify="right" if col in ("ms (p20–p80)", "throughput", "% peak", "× eager", "× compiled") else "left")
    for r in doc["results"]:
        check = r["status"] if r["error"] is None else f"{r['status']} ({r['error']:.1e} ≤ {r['tol']:.0e})" \
            if r["status"] == "ok" else f"{r['status']} ({r['error']:.1e} > {r['tol']:.0e})"
        first = True
        for impl, m in r["impls"].items():
            kernel_row = impl == "kernel"
            t.add_row(r["kernel"] if first else "", r["shape"] if first else "", check if first else "", impl,
                      f"{m['ms']:.3f} ({m['p20']:.3f}–{m['p80']:.3f})", f"{m['rate']:.1f} {r['unit']}",
                      f"{m['pct_peak']:.0f} %" if m["pct_peak"] is not None else "–",
                      f"{r['speedup_vs_eager']:.2f}×" if kernel_row and "speedup_vs_eager" in r else "",
                      f"{r['speedup_vs_compiled']:.2f}×" if kernel_row and "speedup_vs_compiled" in r else "")
            first = False
        if not r["impls"]:
            t.add_row(r["kernel"], r["shape"], check, "", "", "", "", "", "")
    console.print(t)
    if doc.get("compare") is not None:
        c = Table(title="against the earlier results")
        for col in ("kernel", "impl", "before ms", "now ms", "now / before"):
            c.add_column(col)
        for x in comparison:
            c.add_row(x["kernel"], x["impl"], f"{x['old_ms']:.3f}", f"{x['new_ms']:.3f}",
                      f"[red]{x['ratio']:.2f}[/]" if x["regressed"] else f"{x['ratio']:.2f}")
        console.print(c if comparison else "no kernel/shape/impl in common with the earlier file")
    for note in doc.get("notes", []):
        console.print(note, highlight=False, markup=False)
