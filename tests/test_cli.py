"""The `speedrun` command: starts without torch, judges runs by the track's target, says what went wrong."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli
from harness.runs import launch, run
from harness.core.track import load_track

ROOT = Path(__file__).resolve().parents[1]


def test_harness_imports_without_torch_or_numpy():
    """`import harness.cli` (and `speedrun --help`) work where torch, numpy and pandas cannot be imported."""
    code = ("import sys; sys.modules['torch'] = sys.modules['numpy'] = sys.modules['pandas'] = None; "
            "import harness, harness.cli, harness.runs.run, harness.core.track; "
            "sys.argv = ['speedrun', '--help']; harness.cli.main()")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "data" in p.stdout and "run" in p.stdout


def test_unknown_track_is_bad_input(capsys):
    """An unknown track exits 2 and names the missing file and the known tracks."""
    assert cli.main(["run", "--track", "nope"]) == 2
    err = capsys.readouterr().err
    assert "records/nope/track.toml" in err and "tiny-cpu" in err


def result(**over):
    r = dict(track="tiny-cpu", preset="tiny", seed=0, run_id="r", val_loss=1.19, train_time_ms=1000.0, steps=300,
             num_steps=300, step_avg_ms=3.3, tokens_per_step=8192, log="logs/r.txt")
    r.update(over)
    return r


@pytest.mark.parametrize("over,met", [({}, True), ({"val_loss": 1.3}, False), ({"steps": 10}, False)])
def test_verdict_uses_the_track_target(over, met):
    """Met = the run completed all its steps and its final val loss is ≤ the track's `target`."""
    track = load_track("tiny-cpu")
    assert result()["val_loss"] <= track["target"] < 1.3
    verdict = run.judge(track, result(**over), {"floor": {"val_loss": 1.1}})["verdict"]
    assert verdict["target"] == track["target"] and verdict["met_target"] == met and verdict["floor"] == 1.1


def test_trainer_command_uses_torchrun_for_several_ranks():
    """More than one process goes through torch.distributed.run --standalone; one process runs plainly."""
    track = load_track("tiny-cpu")
    kw = dict(seed=3, data_dir=Path("d"), run_id="x", log_dir=Path("l"))
    two = launch.trainer_command(track, nproc=2, **kw)
    assert two[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc_per_node=2" in two
    one = launch.trainer_command(track, nproc=1, max_steps=5, **kw)
    assert one[1].endswith("train_gpt.py") and one[-3:] == ["--max-steps", "5", "--no-compile"] and "--seed" in one


def test_speedrun_run_end_to_end(corpus, capsys):
    """`speedrun run --max-steps 2 --json` runs the trainer, streams it, and reports its RESULT: a smoke
    run is incomplete, so it cannot meet the target (exit 1), and the log it names exists."""
    code = cli.main(["run", "--track", "tiny-cpu", "--max-steps", "2", "--data-dir", str(corpus), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert out["verdict"] == {"target": load_track("tiny-cpu")["target"], "floor": pytest.approx(out["verdict"]["floor"]),
                              "met_target": False, "complete": False}
    r = out["result"]
    assert r["steps"] == 2 and r["track"] == "tiny-cpu" and Path(r["log"]).is_file()
    Path(r["log"]).unlink()


def _project(tmp_path, name="second"):
    """A second project: its own records/ with the tiny-cpu track and no ledger."""
    import shutil

    d = tmp_path / name
    (d / "records" / "tiny-cpu").mkdir(parents=True)
    shutil.copy(ROOT / "records" / "tiny-cpu" / "track.toml", d / "records" / "tiny-cpu" / "track.toml")
    return d


def test_root_is_found_from_the_working_directory(tmp_path):
    """Run from inside a second checkout (any depth), `speedrun` reads and writes that checkout's records,
    not the installed package's, and `--help` says which root it uses; $SPEEDRUN_ROOT still wins."""
    other = _project(tmp_path)
    (other / "deep" / "er").mkdir(parents=True)
    env = {k: v for k, v in __import__("os").environ.items() if k != "SPEEDRUN_ROOT"}
    run_ = lambda *argv, cwd, **kw: subprocess.run([sys.executable, "-m", "harness.cli", *argv], cwd=cwd, env={**env, **kw},
                                                   capture_output=True, text=True, timeout=120)
    p = run_("--help", cwd=other / "deep" / "er")
    assert p.returncode == 0 and f"records: {other / 'records'} (from the working directory" in " ".join(p.stdout.split())
    p = run_("leaderboard", "--no-plot", "--json", cwd=other / "deep")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["file"] == str(other / "leaderboard.md") and (other / "leaderboard.md").is_file()
    third = _project(tmp_path, "third")
    p = run_("--help", cwd=other, SPEEDRUN_ROOT=str(third))
    assert f"records: {third / 'records'} (from $SPEEDRUN_ROOT" in " ".join(p.stdout.split())


def test_track_keys_mean_something(tmp_path, monkeypatch, capsys):
    """A track.toml key the code does not know, a wrong type or an unknown significance test is bad input
    naming the file and the key, before anything runs."""
    import re

    d = _project(tmp_path)
    monkeypatch.setenv("SPEEDRUN_ROOT", str(d))
    toml = d / "records" / "tiny-cpu" / "track.toml"
    text = toml.read_text()
    for edit, says in [(text.replace("[significance]", "[timing]\ntimed = 'steps'\n\n[significance]"), "unknown key 'timing'"),
                       (text.replace('test = "t-test"', 'test = "one-sided one-sample t-test"'), "significance.test"),
                       (re.sub(r"alpha = 0.01", "alpha = 'small'", text), "significance.alpha has type str")]:
        toml.write_text(edit)
        assert cli.main(["verify", "nope.txt", "--track", "tiny-cpu"]) == 2
        err = capsys.readouterr().err
        assert str(toml) in err and says in err, err
    toml.write_text(text)
    assert load_track("tiny-cpu")["significance"]["test"] == "t-test"
