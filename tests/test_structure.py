"""The project's arrows point one way: train_gpt.py → kernels; harness → kernels (lazily, for bench);
never kernels → harness, harness → train_gpt.py, nor an import cycle among the harness's modules —
counting imports inside functions too, which is how cycles hide. Inside harness/, the packages are the
layers and their arrows are asserted here (docs/ARCHITECTURE.md draws them)."""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path) -> set[str]:
    """Every project module name `path` imports, anywhere in the file (module level or inside a function):
    `from harness.judge import logs` gives harness.judge.logs and harness.judge."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        out |= {n for n in names if n.split(".")[0] in ("harness", "kernels", "train_gpt")}
    return out


def modules() -> dict[str, Path]:
    mods = {}
    for p in [*(ROOT / "harness").rglob("*.py"), *(ROOT / "kernels").glob("*.py"), ROOT / "train_gpt.py"]:
        parts = p.relative_to(ROOT).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return mods


def graph() -> dict[str, set[str]]:
    """Module → the project modules it imports (a name that is no module, e.g. a function, counts as the
    module that holds it)."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    return {m: {d for n in imports(p) if (d := resolve(n)) and d != m} for m, p in mods.items()}


def cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, …, a], or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(g[m]):
            if state.get(d) == "open":
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(g):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle():
    """No module of harness/ or kernels/ reaches itself through imports, lazy ones included."""
    assert cycle(graph()) is None, " → ".join(cycle(graph()))


def test_no_upward_arrows():
    """kernels/ imports neither harness nor the trainer; harness never imports train_gpt.py."""
    g = graph()
    up = [(m, d) for m, deps in g.items() for d in deps
          if (m.startswith("kernels.") and d.split(".")[0] in ("harness", "train_gpt"))
          or (m.startswith("harness.") and d == "train_gpt")]
    assert up == []


def test_the_checker_sees_lazy_cycles(tmp_path):
    """The cycle finder finds a cycle made only of function-level imports (so the two tests above can fail)."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    from harness import b\n")
    b.write_text("def g():\n    import harness.a\n")
    g = {m: {d for d in imports(p) if d in ("harness.a", "harness.b")} for m, p in (("harness.a", a), ("harness.b", b))}
    assert cycle(g) in (["harness.a", "harness.b", "harness.a"], ["harness.b", "harness.a", "harness.b"])


def test_the_trainer_never_imports_the_benchmark_harness():
    """Nothing train_gpt.py can import, lazily or not, reaches kernels/bench.py: a run's log embeds every
    kernels/*.py the trainer imported, and the benchmark harness is no part of a record (the GPU peak table
    kernels/node.py needs lives in kernels/peaks.py)."""
    g, seen, todo = graph(), set(), ["train_gpt"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += g[m]
    assert "kernels.node" in seen and "kernels.peaks" in seen and "kernels.bench" not in seen, sorted(seen)


# The layers: each package may import only these (and itself). cli, on top, may import any.
LAYERS = {
    "core": set(),
    "data": {"core"},
    "judge": {"core"},
    "ledger": {"core", "judge"},
    "public": {"core", "judge", "ledger"},
    "runs": {"core", "judge", "ledger"},
}


def package_arrows(g: dict[str, set[str]]) -> set[tuple[str, str, str, str]]:
    """(package, imported package, module, imported module) for every arrow that leaves a package."""
    out = set()
    for m, deps in g.items():
        if not m.startswith("harness.") or m.count(".") < 1:
            continue
        pkg = m.split(".")[1]
        for d in deps:
            if d.startswith("harness.") and d.count(".") >= 1 and (dp := d.split(".")[1]) != pkg:
                out.add((pkg, dp, m, d))
    return out


def test_packages_are_the_layers():
    """Every harness module lives in a layer package (no flat modules), and no arrow between packages goes
    sideways or up: core ← judge ← ledger ← public, runs; data ← core; cli on top."""
    flat = [p.name for p in (ROOT / "harness").glob("*.py") if p.name != "__init__.py"]
    assert flat == [], flat
    assert {p.name for p in (ROOT / "harness").iterdir() if p.is_dir() and (p / "__init__.py").exists()} == \
        set(LAYERS) | {"cli"}
    bad = sorted(f"{m} → {d}" for pkg, dp, m, d in package_arrows(graph())
                 if pkg != "cli" and dp not in LAYERS.get(pkg, set()))
    assert bad == [], bad


def test_the_layer_check_sees_a_sideways_arrow():
    """The layer check flags a ledger module importing public (so the test above can fail)."""
    g = {"harness.ledger.store": {"harness.public.diff"}, "harness.public.diff": set()}
    assert [(p, d) for p, d, *_ in package_arrows(g) if d not in LAYERS[p]] == [("ledger", "public")]


def test_only_runs_spawns_processes():
    """Child processes (subprocess, torchrun) start only in harness/runs: the judge, the ledger, public
    folders and data never run anything (audit's process pool parses logs; it runs no program)."""
    spawners = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "harness").rglob("*.py")
                      if "subprocess" in {n.split(".")[0] for n in _std_imports(p)} and p.parent.name != "runs")
    assert spawners == [], spawners


def _std_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_the_cli_imports_nothing_heavy_at_module_level():
    """harness/cli/*.py import torch, numpy, pandas or the data package only inside a verb's handler."""
    heavy = []
    for p in (ROOT / "harness" / "cli").glob("*.py"):
        for node in ast.parse(p.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            heavy += [f"{p.name}: {n}" for n in names if n.split(".")[0] in ("torch", "numpy", "pandas")
                      or n.startswith("harness.data")]
    assert heavy == [], heavy


def test_slow_is_what_starts_the_trainer():
    """conftest's check behind the `slow` marker knows the trainer's spawns from the harness's others."""
    from conftest import starts_the_trainer

    py = sys.executable
    for argv in ([py, "/repo/train_gpt.py", "--preset", "tiny"], [py, "-m", "torch.distributed.run", "x.py"],
                 [py, "tests/faulty_trainer.py"], [py, "-m", "harness.cli", "attempt", "--track", "tiny-cpu"],
                 [py, "-m", "harness.cli", "doctor", "--quick"], [py, "baselines/tiny_nanogpt.py"]):
        assert starts_the_trainer(argv), argv
    for argv in ([py, "-m", "harness.cli", "record", "add", "run.txt"], [py, "-m", "harness.cli", "audit", "x"],
                 ["git", "rev-parse", "HEAD"], [py, "-c", "import train_gpt"]):
        assert not starts_the_trainer(argv), argv
