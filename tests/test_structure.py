"""The project's arrows point one way: train_gpt.py → kernels; harness → kernels (lazily, for bench);
never kernels → harness, harness → train_gpt.py, nor an import cycle among the harness's modules —
counting imports inside functions too, which is how cycles hide."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path) -> set[str]:
    """Every project module `path` imports, anywhere in the file (module level or inside a function)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from harness import ledger` imports harness.ledger; `from harness.core.files import x` harness.core.files
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for n in names:
            top = n.split(".")[0]
            if top in ("harness", "kernels", "train_gpt"):
                out.add(".".join(n.split(".")[:2]))
    return out


def graph() -> dict[str, set[str]]:
    mods = {f"harness.{p.stem}": p for p in (ROOT / "harness").glob("*.py") if p.stem != "__init__"}
    mods |= {f"kernels.{p.stem}": p for p in (ROOT / "kernels").glob("*.py") if p.stem != "__init__"}
    mods["train_gpt"] = ROOT / "train_gpt.py"
    return {m: {d for d in imports(p) if d in mods and d != m} for m, p in mods.items()}


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
