"""The `speedrun` command: one grammar (noun verb, one --json, one --track policy, old spellings hidden but
working), starts without torch, judges runs by the track's target, says what went wrong (as JSON too)."""
import argparse
import json
import re
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
    assert "data" in p.stdout and "attempt" in p.stdout


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


@pytest.mark.slow
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
    assert p.stdout.strip().split("\n\n")[-1].startswith("records: ")  # the epilog ends --help
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


# ---- one grammar -------------------------------------------------------------------------------------

NEW = {"data", "attempt", "doctor", "bench", "main", "parse", "verify", "diff", "record", "ledger", "audit"}
OLD = [  # (old spelling, the new one it means)
    (["data", "synthetic"], ["data", "make"]),
    (["data", "fineweb"], ["data", "fetch"]),
    (["import", "DIR", "--track", "tiny-cpu"], ["record", "import", "DIR", "--track", "tiny-cpu"]),
    (["leaderboard"], ["ledger", "board"]),
]


def _help(argv) -> str:
    """`speedrun ARGV --help`'s stdout."""
    p = subprocess.run([sys.executable, "-m", "harness.cli", *argv, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _listed(help_text: str) -> set[str]:
    """The sub-commands a --help lists (its indented `  name  help` rows)."""
    return set(re.findall(r"^ {4}(\S+)", help_text, re.M))


@pytest.mark.parametrize("old,new", OLD)
def test_old_spellings_mean_the_new_ones(old, new):
    """Each old spelling parses to the new verb's handler with the same flags and defaults, so scripts that
    use it keep working (tests/test_data, test_fineweb, test_import, test_leaderboard run them end to end)."""
    a, b = cli.build_parser().parse_args(old), cli.build_parser().parse_args(new)
    assert a.func is b.func
    assert {k: v for k, v in vars(a).items() if k not in ("verb", "action")} == \
        {k: v for k, v in vars(b).items() if k not in ("verb", "action")}


def test_old_spellings_are_hidden_from_help_and_choices(capsys):
    """--help lists the new grammar only (run, import, leaderboard, data synthetic/fineweb are absent), and an
    unknown verb's message offers only the listed ones; `run` still parses (to the one-run handler)."""
    assert _listed(_help([])) == NEW
    assert _listed(_help(["data"])) == {"make", "fetch", "check"}
    assert _listed(_help(["record"])) == {"add", "import"}
    assert _listed(_help(["ledger"])) == {"check", "board"}
    assert cli.main(["nope"]) == 2
    err = capsys.readouterr().err
    assert "'audit'" in err and not any(f"'{old}'" in err for old in ("run", "import", "leaderboard"))
    assert cli.main(["data", "nope"]) == 2
    err = capsys.readouterr().err
    assert "'make'" in err and "'synthetic'" not in err and "'fineweb'" not in err
    assert cli.build_parser().parse_args(["run", "--seed", "3"]).seed == 3


def _leaves(parser, path=()):
    """(argv prefix, parser) for every verb that runs something, old spellings included."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for a in subs:
        for name, p in a.choices.items():
            yield from _leaves(p, (*path, name))


def test_json_and_track_are_one_flag_each():
    """Every verb but `main` takes --json, all with one help; every --track has the one policy (TRACK_HELP, no
    argparse default: the policy decides) — and the source declares each exactly once."""
    leaves = dict(_leaves(cli.build_parser()))
    assert len(leaves) >= 19
    flags = {path: {a.option_strings[0]: a for a in p._actions if a.option_strings} for path, p in leaves.items()}
    assert {path for path, f in flags.items() if "--json" not in f} == {("main",)}
    assert len({f["--json"].help for f in flags.values() if "--json" in f}) == 1
    tracks = [f["--track"] for f in flags.values() if "--track" in f]
    assert len(tracks) >= 12 and all(t.help == cli.TRACK_HELP and t.default is None for t in tracks)
    source = "".join(p.read_text() for p in (ROOT / "harness" / "cli").glob("*.py"))
    assert len(re.findall(r'add_argument\(\s*"--json"', source)) == 1
    assert len(re.findall(r'add_argument\(\s*"--track"', source)) == 1


def test_track_policy(monkeypatch):
    """--track wins; else the track of what is given; else this machine's (gpt2-small with a GPU, tiny-cpu
    without); a verb that judges or stores runs refuses to guess (bad input naming the known tracks)."""
    from harness.runs import launch

    ns = lambda t=None: argparse.Namespace(track=t)
    monkeypatch.setattr(launch, "gpu_count", lambda: 0)
    assert cli.track(ns("gpt2-medium"), "gpt2-small") == "gpt2-medium"
    assert cli.track(ns(), "gpt2-small") == "gpt2-small" and cli.track(ns()) == "tiny-cpu"
    monkeypatch.setattr(launch, "gpu_count", lambda: 8)
    assert cli.track(ns()) == "gpt2-small"
    assert cli.track(ns("tiny-cpu"), required="verify") == "tiny-cpu"
    with pytest.raises(cli.InputError, match=r"verify: --track is required.*tiny-cpu"):
        cli.track(ns(), "gpt2-small", required="verify")


def test_attempt_has_no_fault_flag(capsys):
    """The hidden --fault test flag is gone: it is bad usage (exit 2), not a silently accepted option."""
    assert cli.main(["attempt", "--track", "tiny-cpu", "--fault", "kill@2:1"]) == 2
    assert "unrecognized arguments: --fault" in capsys.readouterr().err


# ---- errors, version, console ------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["verify", "nope.txt"], ["verify", "nope.txt", "--track", "nope"], ["diff"],
                                  ["attempt", "--track", "tiny-cpu", "--seeds", "1,1"]])
def test_errors_are_json_under_json(argv, capsys):
    """Bad input or usage exits 2 with the message on stderr; under --json stdout also carries
    {"error": message, "exit": 2} and nothing else; without --json stdout stays empty."""
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and "error: " in err
    message = err.strip().split("error: ", 1)[1]
    assert cli.main([*argv, "--json"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out) == {"error": message, "exit": 2} and message in err


def test_version(capsys, monkeypatch):
    """--version prints the distribution's version; where speedrun is not installed, pyproject.toml's."""
    from importlib import metadata

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"speedrun {cli.version()}"
    pyproject = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)

    def missing(name):
        raise metadata.PackageNotFoundError(name)
    monkeypatch.setattr(metadata, "version", missing)
    assert cli.version() == pyproject


def test_piped_console_honours_columns(monkeypatch):
    """Piped (not a terminal), the console is $COLUMNS wide, else 100, and soft-wraps (long lines stay whole)."""
    monkeypatch.delenv("COLUMNS", raising=False)
    c = cli._console()
    assert not c.is_terminal and c.width == 100 and c.soft_wrap
    monkeypatch.setenv("COLUMNS", "123")
    assert cli._console().width == 123 and cli._console(stderr=True).width == 123


def test_piped_doctor_shows_each_check_once(monkeypatch, capsys):
    """Piped, `speedrun doctor` streams its progress lines to stderr and prints the report on stdout, so stdout
    names each check once; under --json stdout is the report alone."""
    from harness.runs import doctor

    rep = {"track": "tiny-cpu", "device": "cpu", "seconds": 1.0, "ok": True,
           "lines": [{"name": "matmul-check", "verdict": "ok", "figure": "1 TFLOP/s"},
                     {"name": "preset-check", "verdict": "ok", "figure": "loss 4.0"}]}

    def fake_run(track, *, make_shards, quick, say):
        for x in rep["lines"]:
            say(f"{x['verdict'].upper():>7}  {x['name']:<20} {x['figure']}")
        return rep
    monkeypatch.setattr(doctor, "run", fake_run)
    assert cli.main(["doctor", "--track", "tiny-cpu"]) == 0
    out, err = capsys.readouterr()
    assert out.count("matmul-check") == 1 and out.count("preset-check") == 1 and "SOUND" in out
    assert err.count("matmul-check") == 1
    assert cli.main(["doctor", "--track", "tiny-cpu", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == rep and "preset-check" in err
