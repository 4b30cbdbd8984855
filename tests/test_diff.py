"""`speedrun diff`: code, hyperparameters (read, never run), environment and metric deltas between two sides."""
import json
import os
import re
from pathlib import Path

import pytest

from harness import cli
from harness.public import diff
from harness.core import stats
import fixtures
import logmaker

FIXTURES = fixtures.LOGS

TRAINER = '''"""A stand-in trainer with presets."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Hyperparameters:
    track: str
    seq_len: int
    num_steps: int = 1000
    adam_betas: tuple = (0.8, 0.95)
    lr: float = -3e-4


PRESETS = {
    "tiny": Hyperparameters(track="tiny-cpu", seq_len=256, num_steps=300),
    "big": Hyperparameters(track="gpt2-small", seq_len=48 * 1024, num_steps=1750, adam_betas=(0.9, 1 - 1 / 20)),
}
'''


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def with_final(text: str, loss: float, time_ms: float) -> str:
    """The log with its last val line's loss and train time replaced by known values."""
    lines = text.split("\n")
    k = max(i for i, ln in enumerate(lines) if ln.startswith("step:") and "val_loss:" in ln)
    lines[k] = re.sub(r"val_loss:\S+ train_time:\S+", f"val_loss:{loss:.4f} train_time:{time_ms:.0f}ms", lines[k])
    return "\n".join(lines)


def record(root: Path, name: str, source: str, finals: list[tuple[float, float]], kernels=None) -> Path:
    """records/tiny-cpu/<name>/ with a record.json, the script snapshot, kernels and one log per final."""
    folder = root / "records" / "tiny-cpu" / name
    write(folder / "record.json", json.dumps({"id": f"tiny-cpu/{name}"}))
    write(folder / "train_gpt.py", source)
    for path, text in (kernels or {}).items():
        write(folder / path, text)
    for k, (loss, t) in enumerate(finals):
        log = logmaker.ours(seed=k, source=source, kernels=kernels or {})
        write(folder / "logs" / f"run{k}.txt", with_final(log, loss, t))
    return folder


def test_code_diff_shows_changed_line_and_added_kernel(tmp_path):
    """A changed line appears as −/+ in its file's unified diff; a kernel only B embeds is 'added'."""
    a = write(tmp_path / "a.txt", logmaker.ours(kernels={}))
    b = write(tmp_path / "b.txt", logmaker.ours(source=logmaker.SOURCE.replace('print("step")', 'print("fast")')))
    d = diff.diff(a, b)
    by = {c["file"]: c for c in d.code}
    assert by["train_gpt.py"]["status"] == "changed"
    assert '-    print("step")' in by["train_gpt.py"]["diff"] and '+    print("fast")' in by["train_gpt.py"]["diff"]
    assert by["kernels/add.py"]["status"] == "added" and "+def add(a, b):" in by["kernels/add.py"]["diff"]
    assert diff.diff(a, a).code[0]["status"] == "same"


def test_context_limits_the_diff(tmp_path):
    """--context N keeps N unchanged lines around a change (0: only the changed lines)."""
    a = write(tmp_path / "a.txt", logmaker.ours())
    b = write(tmp_path / "b.txt", logmaker.ours(source=logmaker.SOURCE.replace('print("step")', 'print("fast")')))
    lines = diff.diff(a, b, context=0).code[0]["diff"].splitlines()
    body = [ln for ln in lines if not ln.startswith(("---", "+++", "@@"))]
    assert body == ['-    print("step")  # not a step line', '+    print("fast")  # not a step line']


def test_hyperparameters_follow_the_preset_named_in_the_log(tmp_path):
    """The preset named in each log's env line is compared: an override 300 → 250 shows, unchanged fields don't;
    arithmetic like 48 * 1024 is evaluated."""
    a = write(tmp_path / "a.txt", logmaker.ours(source=TRAINER, preset="tiny"))
    changed = TRAINER.replace("num_steps=300", "num_steps=250")
    b = write(tmp_path / "b.txt", logmaker.ours(source=changed, preset="tiny"))
    d = diff.diff(a, b)
    assert d.to_json()["hyperparameters"] == [{"name": "num_steps", "a": 300, "b": 250}]
    assert "preset 'tiny'" in d.hyper_from[0] and "env line" in d.hyper_from[0]
    big = diff.read_source(TRAINER).presets["big"]
    assert big["seq_len"] == 49152 and big["adam_betas"] == (0.9, 0.95)
    assert diff.read_source(TRAINER).defaults["lr"] == -3e-4


def test_hyperparameter_preset_choice_is_said(tmp_path):
    """Without a preset in the log: the only preset if there is one, else the class defaults — and it says which."""
    hs = diff.read_source(TRAINER)
    assert set(hs.presets) == {"tiny", "big"} and hs.defaults["num_steps"] == 1000
    one = TRAINER.split("    \"big\"")[0] + "}\n"
    log = logmaker.ours(source=one).replace(" preset:tiny", "")
    values, said = diff.hyperparameters(diff.resolve(write(tmp_path / "one.txt", log)))
    assert values["num_steps"] == 300 and "only one" in said
    log = logmaker.ours(source=TRAINER).replace(" preset:tiny", "")
    values, said = diff.hyperparameters(diff.resolve(write(tmp_path / "two.txt", log)))
    assert values["num_steps"] == 1000 and "defaults" in said
    _, said = diff.hyperparameters(diff.resolve(write(tmp_path / "none.txt", logmaker.ours())))
    assert said.startswith("nothing found")


def test_hyperparameters_are_read_without_running_code(tmp_path, monkeypatch):
    """A source that would run commands is only parsed: nothing runs, and the unsafe default is 'unreadable'."""
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    evil = ("import os; os.system('touch PWNED')\n" + TRAINER.replace(
        "    lr: float = -3e-4\n", "    lr: float = -3e-4\n    hook: object = __import__('os').system('touch PWNED2')\n"
                                  "    big: int = 10 ** 10 ** 10\n"))
    a = write(tmp_path / "a.txt", logmaker.ours(source=TRAINER))
    b = write(tmp_path / "b.txt", logmaker.ours(source=evil))
    out = diff.diff(a, b).to_json()
    assert not calls and not list(tmp_path.glob("PWNED*"))
    hp = {h["name"]: h for h in out["hyperparameters"]}
    assert hp["hook"]["b"] == {"unreadable": "__import__('os').system('touch PWNED2')"} and hp["hook"]["a"] is None
    assert hp["big"]["b"] == {"unreadable": "10 ** 10 ** 10"}


def test_public_log_hyperparameters_best_effort():
    """A modded-nanogpt style class (plain and annotated attributes) is read; no class at all is said, not guessed."""
    src = ("import os\nclass Hyperparameters:\n    batch_size = 8*64*1024\n    num_iterations: int = 1390\n"
           "    data_path = os.environ.get('DATA_PATH', '.')\nargs = Hyperparameters()\n")
    hs = diff.read_source(src)
    assert hs.defaults["batch_size"] == 524288 and hs.defaults["num_iterations"] == 1390
    assert isinstance(hs.defaults["data_path"], diff.Unreadable)
    assert diff.read_source("x = 1\n").note
    assert diff.read_source("def (:\n").note.startswith("the source does not parse")


def test_environment_changes(tmp_path):
    """Torch version and GPU count differences are listed; what is equal is not."""
    a = write(tmp_path / "a.txt", logmaker.ours(gpus=(8, "H100 80GB HBM3")))
    b = write(tmp_path / "b.txt", logmaker.ours(gpus=(4, "H100 80GB HBM3")).replace("PyTorch 2.9.0", "PyTorch 2.10.0"))
    env = {e["name"]: (e["a"], e["b"]) for e in diff.diff(a, b).environment}
    assert env["torch"] == ("2.9.0", "2.10.0")
    assert env["gpus"] == ("8× NVIDIA H100 80GB HBM3", "4× NVIDIA H100 80GB HBM3")
    assert "triton" not in env and "cuda" not in env


def test_metric_deltas_and_welch_ci(tmp_path, monkeypatch):
    """With 3 runs a side at known values: Δ = mean(B) − mean(A), a Welch 95% CI around it with the right sign
    (df = 4 here, t = 2.776), and the speedup mean(A)/mean(B)."""
    monkeypatch.setenv("SPEEDRUN_ROOT", str(tmp_path))
    record(tmp_path, "0001_a", logmaker.SOURCE, [(1.20, 1000), (1.22, 1100), (1.21, 1050)])
    record(tmp_path, "0002_b", logmaker.SOURCE, [(1.10, 800), (1.12, 820), (1.11, 810)])
    m = diff.diff("tiny-cpu/0001", "tiny-cpu/0002").metrics
    v = m["val_loss"]
    assert (v["n_a"], v["n_b"]) == (3, 3) and v["delta"] == pytest.approx(-0.10)
    half = 2.7764451 * (2 * 1e-4 / 3) ** 0.5
    assert v["ci95"] == pytest.approx([-0.10 - half, -0.10 + half], abs=1e-6) and v["ci95"][1] < 0
    t = m["train_time_ms"]
    assert t["delta"] == pytest.approx(-240) and t["ci95"][1] < 0 and t["speedup"] == pytest.approx(1050 / 810)
    assert t["relative"] == pytest.approx(-240 / 1050)
    assert m["steps"]["delta"] == 0 and m["steps"]["ci95"] == [0, 0]


def test_one_run_a_side_has_no_ci(tmp_path):
    """With one run on a side the delta is given and the CI is null, saying why."""
    a = write(tmp_path / "a.txt", with_final(logmaker.ours(), 1.2, 1000))
    b = write(tmp_path / "b.txt", with_final(logmaker.ours(), 1.1, 500))
    v = diff.diff(a, b).metrics["val_loss"]
    assert v["delta"] == pytest.approx(-0.1) and v["ci95"] is None and "one run" in v["note"]


def test_welch_interval_matches_hand_computation():
    """Unequal variances and sizes: df by Welch–Satterthwaite (here 2.2 → t quantile from harness.core.stats)."""
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0, 10.0]
    va, vb = 1.0 / 3, 10.0 / 5
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 4)
    lo, hi = stats.welch_interval(a, b)
    half = diff.stats.t_ppf(0.975, df) * (va + vb) ** 0.5
    assert (lo, hi) == pytest.approx((4 - half, 4 + half))


def test_record_folder_and_record_id_resolve(tmp_path, monkeypatch):
    """A record folder, `<track>/<NNNN>_<slug>` and `<track>/<NNNN>` under $SPEEDRUN_ROOT all resolve to the same
    record: its snapshot is the code, its logs the runs, and a log that embeds other code is warned about."""
    monkeypatch.setenv("SPEEDRUN_ROOT", str(tmp_path))
    folder = record(tmp_path, "0001_x", logmaker.SOURCE, [(1.2, 1000)], kernels={"kernels/add.py": logmaker.KERNEL})
    (folder / "logs" / "run0.txt").rename(folder / "logs" / "a.txt")
    write(folder / "README.md", "# x\n")  # not code: never part of the diff
    for spec in (str(folder), "tiny-cpu/0001_x", "tiny-cpu/0001"):
        s = diff.resolve(spec)
        assert s.kind == "record" and s.record_id == "tiny-cpu/0001_x"
        assert sorted(s.sources) == ["kernels/add.py", "train_gpt.py"] and len(s.runs()) == 1
        assert not s.warnings
    write(folder / "triton_kernels.py", logmaker.KERNEL)  # a public log's kernel file, stored at its embedded path
    assert "triton_kernels.py" in diff.resolve("tiny-cpu/0001").sources
    write(folder / "train_gpt.py", logmaker.SOURCE + "# edited after the run\n")
    assert any("differs from the record's snapshot" in w for w in diff.resolve("tiny-cpu/0001").warnings)


def test_bad_input_exits_2(tmp_path, monkeypatch, capsys):
    """An unresolvable side exits 2 naming what was tried; so does an empty folder and a negative --context."""
    monkeypatch.setenv("SPEEDRUN_ROOT", str(tmp_path))
    log = write(tmp_path / "a.txt", logmaker.ours())
    assert cli.main(["diff", "tiny-cpu/0042", log]) == 2
    err = capsys.readouterr().err
    assert "tiny-cpu/0042" in err and "0042_*" in err
    (tmp_path / "empty").mkdir()
    assert cli.main(["diff", log, str(tmp_path / "empty")]) == 2
    assert "not a record folder" in capsys.readouterr().err
    assert cli.main(["diff", log, log, "--context", "-1"]) == 2


def test_cli_human_json_and_plot(tmp_path, capsys):
    """Human output shows the diff and the tables; --json is the documented shape; --plot writes a PNG."""
    a = write(tmp_path / "a.txt", logmaker.ours(source=TRAINER))
    b = write(tmp_path / "b.txt", logmaker.ours(source=TRAINER.replace("num_steps=300", "num_steps=250"), seed=1))
    assert cli.main(["diff", a, b]) == 0
    out = capsys.readouterr().out
    assert "train_gpt.py  changed" in out and "num_steps" in out and "CI unavailable" in out
    png = tmp_path / "curves.png"
    assert cli.main(["diff", a, b, "--json", "--plot", str(png)]) == 0
    j = json.loads(capsys.readouterr().out)
    assert set(j) == {"a", "b", "code", "hyperparameters", "environment", "metrics", "comparability"}
    assert set(j["metrics"]) == {"val_loss", "train_time_ms", "steps"} and "speedup" in j["metrics"]["train_time_ms"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="public fixtures absent")
def test_public_fixtures_softcap_vs_fp8():
    """Two real modded-nanogpt logs: the code differs, the GPUs match; their torch differs, so the diff shows
    no speedup (not like for like), only the ratio of their mean times."""
    a = sorted(FIXTURES.glob("2025-01-04_SoftCap__*.txt"))
    b = sorted(FIXTURES.glob("2026-07-17_FP8DownProjection__*.txt"))
    if not a or not b:
        pytest.skip("these two fixture logs are absent")
    j = diff.diff(str(a[0]), str(b[0])).to_json()
    assert any(c["status"] != "same" and c["diff"] for c in j["code"])
    assert j["a"]["environment"]["gpus"] == j["b"]["environment"]["gpus"] is not None
    assert "gpus" not in {e["name"] for e in j["environment"]}
    assert any(w.startswith("torch differs") for w in j["comparability"])
    t = j["metrics"]["train_time_ms"]
    assert t["speedup"] is None and t["ratio_of_means"] > 1


def test_diff_of_two_nodes_shows_the_side_by_side_speedup_not_a_ratio(tmp_path, capsys):
    """Two records timed on different CPUs and track versions: the diff says they are not like for like and
    shows the speedup stored from the side-by-side A/B, never the ratio of the two nodes' times."""
    import shutil

    root = tmp_path / "proj"
    (root / "records/tiny-cpu").mkdir(parents=True)
    for name, version, cpu, ms in (("0001_a", 1, "Old CPU", 300.0), ("0002_b", 2, "New CPU", 10.0)):
        folder = root / "records/tiny-cpu" / name
        (folder / "logs").mkdir(parents=True)
        for seed in range(2):
            text = logmaker.ours(seed=seed, step_ms=ms).replace("CPU: Test CPU", f"CPU: {cpu}")
            (folder / "logs" / f"r{seed}.txt").write_text(text)
        rec = {"id": f"tiny-cpu/{name}", "track_version": version, "speedup": None}
        if name == "0002_b":
            rec["speedup"] = {"baseline": "tiny-cpu/0001_a", "speedup": 12.5, "ci95": [11.0, 14.0], "paired": True}
        (folder / "record.json").write_text(json.dumps(rec))
    shutil.copy(Path(__file__).resolve().parents[1] / "records/tiny-cpu/track.toml", root / "records/tiny-cpu/")
    import os
    old = os.environ.get("SPEEDRUN_ROOT")
    os.environ["SPEEDRUN_ROOT"] = str(root)
    try:
        assert cli.main(["diff", "tiny-cpu/0001", "tiny-cpu/0002", "--json"]) == 0
        j = json.loads(capsys.readouterr().out)
        t = j["metrics"]["train_time_ms"]
        assert t["speedup"] == 12.5 and t["side_by_side"]["paired"] and t["ratio_of_means"] > 25
        assert any("track version" in w for w in j["comparability"])
        assert any("hardware (CPU)" in w for w in j["comparability"])
        assert cli.main(["diff", "tiny-cpu/0001", "tiny-cpu/0002"]) == 0
        out = capsys.readouterr().out
        assert "measured side by side: 12.500×" in out and "not like for like" in out
        (root / "records/tiny-cpu/0002_b/record.json").write_text(json.dumps({"id": "tiny-cpu/0002_b"}))
        assert cli.main(["diff", "tiny-cpu/0001", "tiny-cpu/0002", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["metrics"]["train_time_ms"]["speedup"] is None
    finally:
        if old is None:
            os.environ.pop("SPEEDRUN_ROOT")
        else:
            os.environ["SPEEDRUN_ROOT"] = old
