"""`harness.judge.logs` / `speedrun parse`: every log format since 2024 reads into the same facts."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

import logmaker
from harness import cli
from harness.judge import logs
from harness.core.errors import InputError
from harness.core.files import sha256_text
import fixtures

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = fixtures.LOGS


def fixture_rows():
    if not (FIXTURES / "index.csv").is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{FIXTURES} absent"))]
    return [pytest.param(r, id=r["file"][:24]) for r in csv.DictReader(open(FIXTURES / "index.csv"))]


def write(tmp_path, text, name="log.txt"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize("row", fixture_rows())
def test_fixture_parses_to_its_index_values(row):
    """Each public fixture's last trial ends with the val loss, train time, step and total steps of index.csv."""
    p = logs.parse_file(FIXTURES / row["file"])
    assert p.warnings == []
    last = p.trials[-1]
    v = last.final_val
    assert v.loss == pytest.approx(float(row["final_val_loss"]), abs=1e-9)
    assert v.time_ms == (pytest.approx(float(row["final_train_time_ms"]), abs=1e-6) if row["final_train_time_ms"] else None)
    assert last.final_step == int(row["final_step"])
    assert last.total_steps == (int(row["total_steps"]) if row["total_steps"] else None)
    if p.era == logs.ERA_LLMC:
        assert p.sources == {} and p.env.gpus is None and p.env.torch is None
    else:
        assert p.env.gpus.count == 8 and "H100" in p.env.gpus.model and p.env.torch
        assert p.code_sha256 == sha256_text(p.sources["train_gpt.py"]) and "import" in p.sources["train_gpt.py"]


def test_fixture_details():
    """Fixture specifics: ten trials in the track-3 file, a second embedded file, the old timing era, peak memory."""
    if not FIXTURES.is_dir():
        pytest.skip(f"{FIXTURES} absent")
    by = {f.name[:12]: logs.parse_file(f) for f in FIXTURES.iterdir() if f.suffix in (".txt", ".log")}
    assert len(by["20260503_nor"].trials) == 10 and all(t.complete for t in by["20260503_nor"].trials)
    assert list(by["2026-07-17_F"].sources) == ["train_gpt.py", "triton_kernels.py"]
    assert by["2024-10-10_M"].era == by["2025-01-04_S"].era == logs.ERA_RESET10
    assert by["2026-07-17_F"].era == logs.ERA_MODDED and by["2026-07-17_F"].env.triton == "3.6.0"
    assert by["2025-01-04_S"].trials[0].peak_memory_mib == 31563
    assert by["2025-01-04_S"].env.python == "3.12.7"


VARIANTS = {
    "current": {},
    "leading-sep+train_loss+reset10": dict(leading_sep=True, train_loss=True, reset10=True, peak="none"),
    "dataloader-block (3 seps)+reset10": dict(dataloader=True, reset10=True, peak="consumption"),
    "kernel-banner": dict(kernel_banner=True),
    "seconds+5-decimals+3-trials": dict(seconds=True, decimals=5, trials=3, train_lines=False, torch_line_gpus=True),
    "6-decimals+extra-fields": dict(decimals=6, extra=True),
    "noise-lines": dict(noise=True),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_generated_variant_parses(name, tmp_path):
    """Each modded-nanogpt format variant yields its trials, val points, ms times and GPUs, with no warnings."""
    kw = VARIANTS[name]
    p = logs.parse_file(write(tmp_path, logmaker.modded(**kw)))
    assert p.warnings == []
    assert len(p.trials) == kw.get("trials", 1)
    for t in p.trials:
        assert [v.step for v in t.val] == [0, 10, 20, 30] and t.total_steps == 30 and t.complete
        assert all(v.time_ms is not None for v in t.val)
        assert len(t.train) == (30 if kw.get("train_lines", True) else 0)
    last = p.trials[-1].final_val
    if kw.get("seconds"):
        assert last.time_ms > 2000  # seconds converted to ms
    assert p.env.gpus.count == 8 and "H100" in p.env.gpus.model
    assert list(p.sources) == (["train_gpt.py", "triton_kernels.py"] if kw.get("kernel_banner") else ["train_gpt.py"])
    assert p.sources["train_gpt.py"].startswith('"""A stand-in trainer."""')
    assert p.era == (logs.ERA_RESET10 if kw.get("reset10") else logs.ERA_MODDED)
    if kw.get("peak") == "consumption":
        assert p.trials[0].peak_memory_mib == 31563


def test_llmc_log(tmp_path):
    """llm.c logs: val points from `tel` lines, train points from `trl`, no times, no code, no environment."""
    p = logs.parse_file(write(tmp_path, logmaker.llmc()))
    t = p.trials[0]
    assert p.era == logs.ERA_LLMC and p.warnings == [] and p.sources == {} and p.env.gpus is None
    assert [v.step for v in t.val] == [0, 10, 20, 30, 40] and len(t.train) == 40
    assert t.total_steps is None and t.final_step == 40 and t.final_val.time_ms is None


def test_our_log_sources_env_and_result(tmp_path):
    """Our format: files split at their banners, env hashes equal the embedded text's, RESULT attached to the trial."""
    p = logs.parse_file(write(tmp_path, logmaker.ours(gpus=(8, "H100 80GB HBM3"), world_size=8)))
    assert p.era == logs.ERA_OURS and p.warnings == []
    assert p.sources == {"train_gpt.py": logmaker.SOURCE, "kernels/add.py": logmaker.KERNEL}
    assert p.env.code_sha256 == p.code_sha256s and p.code_sha256 == logmaker.sha(logmaker.SOURCE)
    assert p.env.speedrun["track"] == "tiny-cpu" and p.env.speedrun["world_size"] == "8"
    assert p.env.gpus.count == 8 and p.env.data_sha256 == "d" * 64
    t = p.trials[0]
    assert t.complete and t.result["code_sha256"] == p.code_sha256 and t.peak_memory_mib == 100
    assert t.result["val_loss"] == t.final_val.loss


@pytest.mark.slow
def test_real_trainer_log(corpus, tmp_path_factory):
    """A log written by train_gpt.py itself parses: its env hashes match its source; a --max-steps run is not complete."""
    text = logmaker.real_log(corpus, tmp_path_factory.mktemp("real"))
    p = logs.parse_text(text, file="x.txt")
    assert p.era == logs.ERA_OURS and p.env.cpu and p.env.gpus is None
    assert p.env.code_sha256 == p.code_sha256s
    t = p.trials[0]
    assert t.result["code_sha256"] == p.code_sha256 and t.result["val_loss"] == pytest.approx(t.final_val.loss, abs=1e-4)
    assert [v.step for v in t.val] == [0, 1, 2] and not t.complete
    assert any("truncated" in w for w in p.warnings)


def test_unreadable_lines_are_reported_with_line_numbers(tmp_path):
    """A step-like line that does not parse is a warning naming its line; the rest of the file still reads."""
    lines = logmaker.modded().split("\n")
    i = next(k for k, line in enumerate(lines) if line.startswith("step:5/"))
    lines[i] = "step:5/30 train_time:abcms step_avg:1.00ms"
    lines.insert(i + 1, "[rank0] step:5/30 val_loss:3.3 train_time:1ms")
    p = logs.parse_text("\n".join(lines))
    assert any(w.startswith(f"line {i + 1}:") and "train_time" in w for w in p.warnings)
    assert any(w.startswith(f"line {i + 2}:") and "does not start" in w for w in p.warnings)
    assert p.trials[0].complete and len(p.trials[0].train) == 29


def test_truncated_file_is_reported(tmp_path):
    """A file cut mid-run: the trial is incomplete, and the warnings say where it stops and that the end is cut."""
    text = logmaker.modded()
    cut = text[: text.index("step:25/30") + 12]
    p = logs.parse_text(cut)
    t = p.trials[0]
    assert not t.complete and t.final_step == 24
    assert any("truncated" in w and "24 of 30" in w for w in p.warnings)
    assert any("does not end with a newline" in w for w in p.warnings)


def test_parse_cli_json_contract(tmp_path, capsys):
    """`speedrun parse FILE… --json`: a JSON array, one object per file, with exactly the contract's keys; times in ms."""
    a = write(tmp_path, logmaker.modded(seconds=True), "a.txt")
    b = write(tmp_path, logmaker.llmc(), "b.log")
    assert cli.main(["parse", str(a), str(b), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["file"] for o in out] == [str(a), str(b)]
    for o in out:
        assert set(o) == {"file", "era", "code_sha256", "gpus", "torch", "trials", "warnings"}
        for t in o["trials"]:
            assert set(t) == {"val", "total_steps", "final_step"}
    assert out[0]["gpus"] == {"count": 8, "model": "NVIDIA H100 80GB HBM3"}
    assert out[0]["trials"][0]["val"][-1][2] > 2000 and out[0]["trials"][0]["total_steps"] == 30
    assert out[1]["gpus"] is None and out[1]["code_sha256"] is None and out[1]["trials"][0]["val"][-1][2] is None


def test_parse_cli_table_and_missing_file(tmp_path, capsys):
    """The human table names each file; a missing file is bad input (exit 2) and names the path."""
    assert cli.main(["parse", str(write(tmp_path, logmaker.modded()))]) == 0
    assert "log.txt" in capsys.readouterr().out
    assert cli.main(["parse", str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt" in capsys.readouterr().err


def test_logs_import_without_torch_or_numpy():
    """`harness.judge.logs` and `speedrun parse` need neither torch nor numpy."""
    code = ("import sys; sys.modules['torch'] = None; sys.modules['numpy'] = None; "
            "import harness.cli, harness.judge.logs")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr


def test_bench_parse_throughput(benchmark, tmp_path):
    """Benchmark (not a test of speed): parse ~100 MB of generated logs; prints MB/s."""
    one = logmaker.ours(total=20000, val_every=250).encode()
    files = []
    for k in range(max(1, 100_000_000 // (len(one) * 10))):
        f = tmp_path / f"b{k}.txt"
        f.write_bytes(one * 10)  # ten runs back to back: ten trials per file
        files.append(f)
    size = sum(f.stat().st_size for f in files)
    benchmark.pedantic(lambda: [logs.parse_file(f) for f in files], rounds=1, iterations=1)
    mbps = size / 1e6 / benchmark.stats.stats.mean
    print(f"\nparse: {size / 1e6:.0f} MB in {benchmark.stats.stats.mean:.2f} s = {mbps:.0f} MB/s")


def test_frame_and_tidy_exports(tmp_path, capsys):
    """`harness.frame(paths)` loads every step line of every trial (folders searched) into one tidy
    DataFrame; `speedrun parse --csv/--parquet` write the same table; a named non-log file is bad input."""
    import harness
    import pandas as pd

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.txt").write_text(logmaker.ours(seed=1, total=20, val_every=5))
    (tmp_path / "logs" / "b.txt").write_text(logmaker.modded(trials=2, total=30, val_every=10))
    (tmp_path / "logs" / "notes.txt").write_text("not a log\n")
    df = harness.frame([tmp_path / "logs"])
    assert list(df.columns)[:5] == ["file", "trial", "step", "total_steps", "kind"]
    val = df[df.kind == "val"]
    assert set(val.groupby("file").trial.nunique()) == {1, 2}  # b.txt holds two trials
    a = val[val.file.str.endswith("a.txt")]
    assert list(a.step) == [0, 5, 10, 15, 20] and a.val_loss.notna().all() and (df[df.kind == "train"].val_loss.isna()).all()
    assert len(df[(df.file.str.endswith("a.txt")) & (df.kind == "train")]) == 20
    files = [str(tmp_path / "logs" / n) for n in ("a.txt", "b.txt")]
    assert cli.main(["parse", *files, "--csv", str(tmp_path / "t.csv"), "--parquet", str(tmp_path / "t.parquet"),
                     "--json"]) == 0
    capsys.readouterr()
    csv_df, pq = pd.read_csv(tmp_path / "t.csv"), pd.read_parquet(tmp_path / "t.parquet")
    assert len(csv_df) == len(pq) == len(df) and list(pq.columns) == list(df.columns)
    with pytest.raises(InputError, match="not a run log"):
        harness.frame([tmp_path / "logs" / "notes.txt"])
