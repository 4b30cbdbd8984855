"""`speedrun attempt`: seeded runs through torchrun, every run in the manifest whatever became of it,
faults contained to their run, A/B against a recorded baseline, and a ledger no fault can touch.

Every test works in a temporary SPEEDRUN_ROOT (a copy of the track files), runs the real trainer on the
tiny preset for a few steps on the CPU (gloo), and never writes the repository's records.
"""
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.runs import attempt, launch, manifest, runner
from harness.public import submit
from harness import cli, ledger
from harness.core.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train_gpt.py"
STEPS = "6"  # past the tiny preset's 3 untimed warm-up steps
# Two "nodes" on one machine: torchrun leaves OMP_NUM_THREADS alone at one process a node, so each would
# spin a thread per core on the same cores (3x slower steps, 6x slower warm-up on 2 cores).
SHARED_CORES = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def track_corpus(tmp_path_factory):
    """The tiny-cpu corpus exactly as the track defines it (so `speedrun attempt` uses it as is)."""
    from harness import data
    from harness.core.track import load_track

    out = tmp_path_factory.mktemp("track-corpus")
    data.ensure_synthetic(load_track("tiny-cpu"), out=str(out))
    return out


def make_root(path: Path) -> Path:
    """A SPEEDRUN_ROOT with the tracks and no ledger."""
    for toml in (ROOT / "records").glob("*/track.toml"):
        (path / "records" / toml.parent.name).mkdir(parents=True)
        shutil.copy(toml, path / "records" / toml.parent.name / "track.toml")
    return path


def records_state(root: Path) -> dict:
    """sha256 of every file under records/ (the ledger, record folders, track files)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "records").rglob("*")) if p.is_file() and p.name != ".ledger.lock"}


def survivors(marker: str) -> list[str]:
    """Live processes whose command line mentions marker (the temp root: every trainer and torchrun of a
    test has it in --log-dir), found by scanning /proc."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = next((ln for ln in (d / "status").read_text().splitlines() if ln.startswith("State:")), "")
            except OSError:
                continue
            if marker in cmd and "zombie" not in state:
                out.append(f"{d.name}: {cmd[:200]}")
    return out


def speedrun(root: Path, *args, env=None, **kw) -> subprocess.CompletedProcess:
    e = dict(os.environ, SPEEDRUN_ROOT=str(root), COLUMNS="160", **(env or {}))
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True,
                          env=e, cwd=ROOT, timeout=900, **kw)


def attempt_args(corpus, *args):
    return ["attempt", "--track", "tiny-cpu", "--script", SCRIPT, "--data-dir", corpus, "--max-steps", STEPS,
            "--json", *args]


def the_attempt(root: Path) -> Path:
    (folder,) = (root / "logs" / "attempts").iterdir()
    return folder


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- a clean attempt, its record, and an A/B attempt against that record ----------------------------------

@pytest.fixture(scope="module")
def smoke(tmp_path_factory, track_corpus):
    """`speedrun attempt --track tiny-cpu --runs 3 --nproc 2 --max-steps 6 --record …`, once per module."""
    root = make_root(tmp_path_factory.mktemp("root"))
    before = records_state(root)
    p = speedrun(root, *attempt_args(track_corpus, "--runs", "3", "--nproc", "2", "--record", "smoke"))
    return root, p, json.loads(p.stdout), before


@pytest.mark.slow
def test_three_runs_end_to_end(smoke):
    """Three seeds run through torchrun (2 gloo ranks each), each into its own log under the attempt
    folder, with step/val/RESULT facts and log sha256 in the manifest; verification runs on all three
    and the verdict says why a smoke attempt is not a record; `--record` is refused by the ledger's
    verification with nothing written; no trainer process outlives the attempt."""
    root, p, m, before = smoke
    assert p.returncode == 1, p.stderr[-3000:]
    folder = the_attempt(root)
    assert json.loads((folder / "attempt.json").read_text()) == m
    assert m["status"] == "done" and m["track"] == "tiny-cpu" and m["nproc"] == 2 and m["script_sha256"] == sha(SCRIPT)
    assert [(r["role"], r["seed"], r["outcome"], r["exit_code"]) for r in m["runs"]] == \
        [("candidate", s, "ok", 0) for s in range(3)]
    for r in m["runs"]:
        log = folder / r["log"]
        assert r["log_sha256"] == sha(log) and r["steps"] == 6 and r["val_loss"] < 4.8
        assert log.read_text().rstrip().split("\n")[-1].startswith("RESULT ")
        assert (folder / r["console"]).is_file()
    v = m["verdict"]
    assert v["record"] is False and v["verify"]["ok"] is False and len(v["verify"]["runs"]) == 3
    assert {"smoke", "target"} <= {r["check"] for r in v["reasons"]}
    assert m["recorded"]["recorded"] is False and "not a record" in m["recorded"]["reason"]  # --record needs a record
    assert records_state(root) == before
    assert "candidate s2" in p.stderr and "NOT A RECORD:" not in p.stdout  # progress on stderr, JSON on stdout
    assert survivors(str(root)) == []


@pytest.fixture(scope="module")
def baseline_record(smoke):
    """The smoke attempt recorded as unofficial with `speedrun record add --attempt`."""
    root, _, m, _ = smoke
    p = speedrun(root, "record", "add", "--attempt", the_attempt(root), "--title", "smoke baseline", "--unofficial",
                 "--json")
    return root, p


@pytest.mark.slow
def test_record_add_attempt_takes_every_candidate_run(smoke, baseline_record, tmp_path):
    """`record add --attempt DIR` stores every candidate log of the attempt (none can be left out), notes
    the attempt in the record; it is refused (nothing written) when a run did not finish, and it is bad
    input when a log changed after the attempt."""
    root, p = baseline_record
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    rec = out["record"]
    m = json.loads((the_attempt(root) / "attempt.json").read_text())
    assert sorted(k for k in rec["files"] if k.startswith("logs/")) == sorted(f"logs/{r['log']}" for r in m["runs"])
    assert rec["source"]["attempt"] == m["id"] and rec["source"]["candidate_runs"] == 3 and not rec["official"]
    assert ledger.check(root).ok

    # a copy of the attempt whose second run "failed": refused, nothing written
    bad = tmp_path / "attempt"
    shutil.copytree(the_attempt(root), bad)
    mb = json.loads((bad / "attempt.json").read_text())
    mb["runs"][1].update(outcome="failed", message="exit 1")
    (bad / "attempt.json").write_text(json.dumps(mb))
    state = records_state(root)
    p = speedrun(root, "record", "add", "--attempt", bad, "--title", "x")
    assert p.returncode == 1 and "did not finish" in p.stderr and records_state(root) == state
    # a log edited after the attempt: bad input
    log = bad / mb["runs"][0]["log"]
    log.write_text(log.read_text().replace("val_loss:", "val_loss: "))
    p = speedrun(root, "record", "add", "--attempt", bad, "--title", "x", "--unofficial")
    assert p.returncode == 2 and "sha256 differs" in p.stderr and records_state(root) == state


@pytest.fixture(scope="module")
def ab_attempt(baseline_record, track_corpus):
    """A candidate (one byte changed) timed A B A B against tiny-cpu/0001: the process, its manifest, and
    the records' state before it ran."""
    root, _ = baseline_record
    state = records_state(root)
    cand = candidate_script(root.parent / "cand")
    p = speedrun(root, *attempt_args(track_corpus, "--runs", "2", "--nproc", "2", "--baseline", "tiny-cpu/0001",
                                     "--script", cand))
    return p, json.loads(p.stdout), state


@pytest.mark.slow
def test_baseline_runs_interleave_and_report_a_speedup(baseline_record, ab_attempt):
    """`--baseline tiny-cpu/0001` runs the record's own snapshot (copied out of the record and checked
    against its sha256s) and the candidate A B A B on the same seeds, and reports the paired speedup
    with its 95% interval; the record folder is left as it was (ledger check intact)."""
    root, _ = baseline_record
    p, m, state = ab_attempt
    assert p.returncode == 1, p.stderr[-3000:]
    assert [(r["role"], r["seed"], r["outcome"]) for r in m["runs"]] == \
        [("baseline", 0, "ok"), ("candidate", 0, "ok"), ("baseline", 1, "ok"), ("candidate", 1, "ok")]
    folder = Path(m["dir"])
    rec_id = m["baseline"]["record"]
    assert rec_id.startswith("tiny-cpu/0001_") and Path(m["baseline"]["script"]).parent == folder / "baseline"
    assert m["baseline"]["script_sha256"] == sha(root / "records" / rec_id / "train_gpt.py")
    sp = m["verdict"]["speedup"]
    times = [r["train_time_ms"] for r in m["runs"]]
    assert sp["pairs"] == 2 and sp["speedup"] == pytest.approx(((times[0] / times[1]) * (times[2] / times[3])) ** 0.5)
    assert sp["ci95"][0] < sp["speedup"] < sp["ci95"][1]
    assert "3/4 baseline" in p.stderr and "4/4 candidate s1" in p.stderr  # a summary row per run
    assert records_state(root) == state and ledger.check(root).ok


def candidate_script(folder: Path) -> Path:
    """The trainer with one byte changed (a change to time against the record), its kernels beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "kernels", folder / "kernels", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "train_gpt.py").write_text(SCRIPT.read_text() + "\n# a candidate change\n")
    return folder / "train_gpt.py"


@pytest.mark.slow
def test_the_records_own_code_is_a_reproduction(smoke, baseline_record, track_corpus):
    """The candidate's code is the baseline record's, byte for byte: no baseline arm runs; the verdict is
    about reproducing the record (here a smoke run, so not reproduced), never a record, and it compares
    this node's time with the record's own."""
    root, _ = baseline_record
    p = speedrun(root, *attempt_args(track_corpus, "--runs", "1", "--nproc", "2", "--baseline", "tiny-cpu/0001"))
    assert p.returncode == 1, p.stderr[-3000:]
    m = json.loads(p.stdout)
    assert m["baseline"] is None and m["reproduction_of"].startswith("tiny-cpu/0001_")
    assert [r["role"] for r in m["runs"]] == ["candidate"]
    v = m["verdict"]
    assert v["record"] is False and v["label"].startswith("NOT REPRODUCED tiny-cpu/0001_")
    assert v["calibration"]["factor"] > 0 and "speed" not in {r["check"] for r in v["reasons"]}
    assert "a reproduction of tiny-cpu/0001_" in p.stderr


@pytest.mark.slow
def test_extend_adds_pairs_and_keeps_every_look(baseline_record, ab_attempt):
    """`attempt --extend DIR --runs 1` adds one A/B pair on a new seed to the same attempt; the manifest
    keeps both looks at the interval; a changed candidate script is refused (exit 2)."""
    root, _ = baseline_record
    _, m, _ = ab_attempt
    folder, cand = Path(m["dir"]), Path(m["script"])
    assert len(m["looks"]) == 1 and m["verdict"]["speedup"]["pairs"] == 2
    p = speedrun(root, "attempt", "--extend", folder, "--runs", "1", "--json")
    m2 = json.loads(p.stdout)
    assert [(r["role"], r["seed"]) for r in m2["runs"]][4:] == [("baseline", 2), ("candidate", 2)]
    assert m2["seeds"] == [0, 1, 2] and len(m2["looks"]) == 2 and m2["verdict"]["speedup"]["pairs"] == 3
    assert m2["verdict"]["looks"] == 2 and m2["looks"][0] == m["looks"][0]
    cand.write_text(cand.read_text() + "# edited\n")
    p = speedrun(root, "attempt", "--extend", folder, "--runs", "1")
    assert p.returncode == 2 and "changed since the attempt ran" in p.stderr


# ---- faults: each stays inside its run -----------------------------------------------------------------

@pytest.mark.slow
def test_a_dying_rank_fails_its_run_and_the_attempt_goes_on(tmp_path, track_corpus, monkeypatch):
    """The harness SIGKILLs rank 1 of the first run once it reports step 2 (Options.kill_rank_at_step: a crash
    from outside, the trainer knows nothing of it); torchrun tears the run down; the run is `failed` with a
    message naming rank 1 and SIGKILL, the manifest records the fault, torchrun's report is shown, and the
    next run still runs to the end."""
    import io

    from rich.console import Console

    root = make_root(tmp_path)
    before = records_state(root)
    monkeypatch.setenv("SPEEDRUN_ROOT", str(root))
    out = io.StringIO()
    code, m = attempt.run_attempt(attempt.Options(
        track="tiny-cpu", runs=2, nproc=2, script=str(SCRIPT), data_dir=str(track_corpus), max_steps=int(STEPS),
        as_json=True, kill_rank_at_step=(2, 1)), Console(file=out, width=160))
    first, second = m["runs"]
    assert first["outcome"] == "failed" and first["fault"] == "kill@2:1" and first["exit_code"] not in (0, None)
    assert "rank 1 failed first" in first["message"] and "SIGKILL" in first["message"]
    assert "rank 1 failed first" in out.getvalue() and "Root Cause" in out.getvalue()
    assert "fault" not in second
    assert second["outcome"] == "ok" and (Path(m["dir"]) / second["log"]).is_file()
    assert {"check": "unfinished", "detail": "1 of 2 candidate run(s) did not finish (seed 0 failed)"} in \
        [{k: r[k] for k in ("check", "detail")} for r in m["verdict"]["reasons"]]
    assert records_state(root) == before and survivors(str(root)) == []


@pytest.mark.slow
def test_ctrl_c_stops_every_process_and_keeps_the_books(tmp_path, track_corpus):
    """SIGINT to `speedrun attempt` while its second run trains (stalled at a timed step by
    tests/faulty_trainer.py, so the signal cannot miss it): every trainer process stops, exit 130, the
    finished run's log is kept (sha256 as in the manifest), the manifest marks the second run interrupted,
    and the ledger is untouched even with --record."""
    root = make_root(tmp_path)
    before = records_state(root)
    args = attempt_args(track_corpus, "--runs", "2", "--nproc", "2", "--record", "never")
    args[args.index("--script") + 1] = ROOT / "tests" / "faulty_trainer.py"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True,
                            env=dict(os.environ, SPEEDRUN_ROOT=str(root), FAULT="stall", FAULT_SEED="1"))
    deadline = time.monotonic() + 600
    try:
        while True:  # wait until run 2's rank 0 has opened its log
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            try:
                m = json.loads((the_attempt(root) / "attempt.json").read_text())
            except (ValueError, OSError):
                m = {"runs": []}
            if len(m["runs"]) == 2 and (the_attempt(root) / m["runs"][1]["log"]).is_file():
                break
            time.sleep(0.5)
        assert survivors(str(root)), "the second run should be running"
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert survivors(str(root)) == []
    m = json.loads(out)
    assert json.loads((the_attempt(root) / "attempt.json").read_text()) == m
    assert m["status"] == "interrupted" and [r["outcome"] for r in m["runs"]] == ["ok", "interrupted"]
    assert m["runs"][0]["log_sha256"] == sha(the_attempt(root) / m["runs"][0]["log"])
    assert m["recorded"]["recorded"] is False and records_state(root) == before


@pytest.mark.slow
def test_nan_loss_marks_the_run_diverged(tmp_path, track_corpus):
    """A trainer whose loss turns nan at timed step 2 (tests/faulty_trainer.py: train_gpt.py with its model's
    loss wrapped) prints `diverged: …` and exits 3; the run is `diverged` with the trainer's own words as its
    message."""
    root = make_root(tmp_path)
    before = records_state(root)
    args = attempt_args(track_corpus, "--runs", "1", "--nproc", "2")
    args[args.index("--script") + 1] = ROOT / "tests" / "faulty_trainer.py"
    p = speedrun(root, *args, env={"FAULT": "nan", "FAULT_AT_STEP": "2"})
    assert p.returncode == 1
    (r,) = json.loads(p.stdout)["runs"]
    assert r["outcome"] == "diverged" and r["exit_code"] not in (0, None)  # torchrun's, not the rank's 3
    assert r["message"].startswith("diverged: train loss nan at step 3")
    assert r["val_loss"] is None and records_state(root) == before and survivors(str(root)) == []


@pytest.mark.slow
def test_timeout_kills_the_run_and_its_process_tree(tmp_path, track_corpus):
    """--timeout 3: the run (torchrun and both ranks, each in a session of its own) is killed, marked
    `timeout`, and nothing of it survives."""
    root = make_root(tmp_path)
    before = records_state(root)
    p = speedrun(root, *attempt_args(track_corpus, "--runs", "1", "--nproc", "2", "--timeout", "3"))
    (r,) = json.loads(p.stdout)["runs"]
    assert r["outcome"] == "timeout" and r["exit_code"] is None and "--timeout 3 s" in r["message"]
    assert survivors(str(root)) == [] and records_state(root) == before


@pytest.mark.slow
def test_a_full_disk_fails_the_run_not_the_bookkeeping(tmp_path, track_corpus):
    """A file-size limit (RLIMIT_FSIZE, inherited by the trainer) makes the log write fail with EFBIG, as
    a full disk would: the run is `failed` with that error, the manifest still lands whole, and --record
    is refused with nothing written."""
    root = make_root(tmp_path)
    before = records_state(root)
    limit = 30_000  # the log's embedded source alone is larger; the manifest is far smaller

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    p = speedrun(root, *attempt_args(track_corpus, "--runs", "1", "--nproc", "1", "--record", "full"),
                 preexec_fn=small_disk)
    assert p.returncode == 1, p.stderr[-2000:]
    m = manifest.load_manifest(the_attempt(root))
    (r,) = m["runs"]
    assert r["outcome"] == "failed" and "File too large" in r["message"]
    assert (the_attempt(root) / r["log"]).stat().st_size <= limit
    assert m["recorded"]["recorded"] is False and "not a record" in m["recorded"]["reason"]
    assert records_state(root) == before


# ---- pieces ---------------------------------------------------------------------------------------------

def test_multinode_launch_uses_the_rendezvous():
    """--nnodes > 1 with --node-rank is torchrun's static rendezvous (node r holds global ranks r·nproc…, so
    node 0 holds rank 0 and the log); without --node-rank it joins c10d (ranks by arrival, torchrun ignores a
    node rank there); without an endpoint it is bad input."""
    cmd = launch.Launch(nproc=8, nnodes=2, node_rank=1, rdzv_endpoint="n0:29500", rdzv_id="job-3").argv("t.py")
    assert "--standalone" not in cmd and cmd[-1] == "t.py"
    assert {"--nnodes=2", "--node-rank=1", "--master-addr=n0", "--master-port=29500", "--nproc_per_node=8"} <= set(cmd)
    elastic = launch.Launch(nproc=8, nnodes=2, rdzv_endpoint="n0:29500", rdzv_id="job-3").argv("t.py")
    assert {"--rdzv-endpoint=n0:29500", "--rdzv-id=job-3", "--rdzv-backend=c10d"} <= set(elastic)
    assert not any(a.startswith("--node-rank") for a in elastic)
    with pytest.raises(InputError, match="--rdzv-endpoint"):
        launch.Launch(nproc=8, nnodes=2).argv("t.py")


def test_runs_share_one_compile_cache(monkeypatch, tmp_path):
    """Every run from a checkout compiles into <root>/.cache (a fresh clone starts cold, its later runs load
    what the first compiled); a cache the user chose is kept; a CPU track hides the GPUs."""
    track = {"hardware": {"accelerator": "cpu"}}
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("SPEEDRUN_ROOT", str(tmp_path))
    env = launch.trainer_env(track)
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / ".cache" / "inductor")
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/elsewhere")
    assert launch.trainer_env(track)["TORCHINDUCTOR_CACHE_DIR"] == "/elsewhere"


@pytest.mark.slow
def test_two_nodes_match_one_node(tmp_path, track_corpus):
    """Two "nodes" on this machine (two `speedrun attempt --nnodes 2 --node-rank r` of one process each, a
    rendezvous on localhost, gloo) run the same training as one node with two processes: node 0 holds the
    log (rank 0), node 1 knows its run finished elsewhere, both used one attempt id and run id, and the
    val losses equal the one-node run's."""
    import socket

    with socket.socket() as s_:
        s_.bind(("127.0.0.1", 0))
        port = s_.getsockname()[1]
    roots = [make_root(tmp_path / f"node{r}") for r in range(2)]
    common = attempt_args(track_corpus, "--runs", "1", "--nproc", "1", "--nnodes", "2", "--rdzv-id", "job-7",
                          "--rdzv-endpoint", f"127.0.0.1:{port}", "--timeout", "600")
    procs = [subprocess.Popen([sys.executable, "-m", "harness.cli", *map(str, common), "--node-rank", str(r)],
                              cwd=ROOT, env={**os.environ, **SHARED_CORES, "SPEEDRUN_ROOT": str(roots[r])}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    m0, m1 = (json.loads(o[0]) for o in outs)
    assert m0["id"] == m1["id"] == "tiny-cpu-job-7" and m0["runs"][0]["run_id"] == m1["runs"][0]["run_id"]
    assert m0["runs"][0]["outcome"] == "ok" and (Path(m0["dir"]) / m0["runs"][0]["log"]).is_file()
    assert m1["runs"][0]["outcome"] == "ok" and "another node" in m1["runs"][0]["message"]
    one = speedrun(make_root(tmp_path / "single"), *attempt_args(track_corpus, "--runs", "1", "--nproc", "2"))
    m = json.loads(one.stdout)

    def vals(mm):
        text = (Path(mm["dir"]) / mm["runs"][0]["log"]).read_text()
        return [float(x) for x in re.findall(r"^step:\d+/\d+ val_loss:(\S+)", text, re.M)]
    two_nodes, one_node = vals(m0), vals(m)
    assert len(two_nodes) == len(one_node) >= 2
    assert max(abs(a - b) for a, b in zip(two_nodes, one_node)) < 2e-3, (two_nodes, one_node)


@pytest.mark.slow
def test_two_nodes_in_one_checkout_share_one_attempt_folder(tmp_path, track_corpus):
    """Two `speedrun attempt --nnodes 2 --node-rank r` in ONE checkout (a cluster's shared filesystem): both
    finish (no "exists"), in one attempt folder, each writing only its own files: node 0 the manifest
    attempt.json, the log, console/ and ranks/; node 1 attempt.node1.json, console/node1/ and ranks/node1/. A second attempt with
    the same --rdzv-id is refused (exit 2), naming the manifest that exists."""
    import socket

    with socket.socket() as s_:
        s_.bind(("127.0.0.1", 0))
        port = s_.getsockname()[1]
    root = make_root(tmp_path / "shared")
    common = attempt_args(track_corpus, "--runs", "1", "--nproc", "1", "--nnodes", "2", "--rdzv-id", "job-8",
                          "--rdzv-endpoint", f"127.0.0.1:{port}", "--timeout", "600")
    e = dict(os.environ, **SHARED_CORES, SPEEDRUN_ROOT=str(root))
    procs = [subprocess.Popen([sys.executable, "-m", "harness.cli", *map(str, common), "--node-rank", str(r)],
                              cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    # exit 1: a smoke run (--max-steps) is never a record; what matters is that both ran (no "exists": exit 2)
    assert [p.returncode for p in procs] == [1, 1], [o[1][-2000:] for o in outs]
    m0, m1 = (json.loads(o[0]) for o in outs)
    assert m0["dir"] == m1["dir"] == str(the_attempt(root)) and m0["runs"][0]["outcome"] == m1["runs"][0]["outcome"] == "ok"
    run_id, folder = m0["runs"][0]["run_id"], the_attempt(root)
    files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    ranks = {f for f in files if f.startswith("ranks/")}  # torchrun --tee: each node's ranks in its own folder
    assert files - ranks == {"attempt.json", "attempt.node1.json", f"{run_id}.txt", f"console/{run_id}.txt",
                             f"console/node1/{run_id}.txt"}, files
    node1 = {f for f in ranks if f.startswith(f"ranks/node1/{run_id}/")}
    assert node1 and ranks - node1 and all(f.startswith(f"ranks/{run_id}/") for f in ranks - node1), ranks
    assert json.loads((folder / "attempt.json").read_text())["runs"][0]["console"] == f"console/{run_id}.txt"
    assert json.loads((folder / "attempt.node1.json").read_text())["node_rank"] == 1
    again = subprocess.run([sys.executable, "-m", "harness.cli", *map(str, common), "--node-rank", "1"], cwd=ROOT,
                           env=e, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "attempt.node1.json: exists" in again.stderr


def test_root_cause_names_the_rank_torchrun_saw_fail_first():
    """torchrun's failure report is read for the first failing rank, its exit code and traceback line."""
    tail = ["Failures:", "[1]:", "  rank      : 0 (local_rank: 0)", "  exitcode  : -15 (pid: 7)",
            "Root Cause (first observed failure):", "[0]:", "  rank      : 3 (local_rank: 1)",
            "  exitcode  : -9 (pid: 8)  (SIGKILL)", "  traceback : Signal 9 (SIGKILL) received by PID 8"]
    assert runner.root_cause(tail) == {"rank": 3, "local_rank": 1, "exitcode": -9,
                                        "traceback": "Signal 9 (SIGKILL) received by PID 8"}


def test_main_job_attempts_the_track_this_machine_can_run(monkeypatch, tmp_path):
    """`./run.sh` (`speedrun main`): on 8 GPUs, FineWeb is fetched when missing and gpt2-small is
    attempted; without GPUs, the tiny-cpu attempt on its synthetic corpus, made first when missing (the
    runs layer never makes data). Offline, the fetch fails fast: exit 1 naming the hub, nothing attempted."""
    from harness.cli import runs as cli_runs
    from harness.data import fineweb, ready

    monkeypatch.setenv("SPEEDRUN_ROOT", str(make_root(tmp_path)))
    calls = []
    monkeypatch.setattr(ready, "fetched", lambda track: calls.append(("fetch", track["name"])))
    monkeypatch.setattr(ready, "ready", lambda track, override=None: calls.append(("ready", track["name"])))
    monkeypatch.setattr(attempt, "run_attempt", lambda o, console: calls.append(("attempt", o.track, o.runs)) or (0, {}))
    monkeypatch.setattr(attempt, "render", lambda m, console: None)
    monkeypatch.setattr(launch, "gpu_count", lambda: 8)
    assert cli.main(["main"]) == 0
    monkeypatch.setattr(launch, "gpu_count", lambda: 0)
    assert cli.main(["main"]) == 0
    assert calls == [("fetch", "gpt2-small"), ("ready", "gpt2-small"), ("attempt", "gpt2-small", None),
                     ("ready", "tiny-cpu"), ("attempt", "tiny-cpu", cli_runs.CPU_RUNS)]

    def offline(track):
        raise fineweb.DataError("huggingface.co unreachable")
    monkeypatch.setattr(ready, "fetched", offline)
    monkeypatch.setattr(launch, "gpu_count", lambda: 8)
    calls.clear()
    assert cli.main(["main"]) == 1 and calls == []


def test_bad_baseline_is_bad_input(tmp_path, monkeypatch, capsys):
    """An unknown --baseline id exits 2, naming the ledger it looked in."""
    monkeypatch.setenv("SPEEDRUN_ROOT", str(make_root(tmp_path)))
    assert cli.main(["attempt", "--track", "tiny-cpu", "--script", str(SCRIPT), "--baseline", "tiny-cpu/0009",
                     "--data-dir", str(tmp_path / "nodata")]) == 2
    assert "tiny-cpu/0009" in capsys.readouterr().err


@pytest.mark.slow
def test_a_public_record_can_be_the_baseline(tmp_path, track_corpus):
    """A record whose script follows the public convention (no flags, data/fineweb10B/, logs/<uuid>.txt, no
    RESULT line) is stored with launch = modded; `attempt --baseline` runs its snapshot that way: no
    --preset/--seed, its shards linked where it looks, its log moved into the attempt under the run's
    name and read for its facts; the A/B pairs give a speedup."""
    root = make_root(tmp_path / "root")
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "fineweb10B").symlink_to(track_corpus, target_is_directory=True)
    shutil.copy(ROOT / "tests" / "public_script.py", work / "train_gpt.py")
    subprocess.run([sys.executable, "train_gpt.py"], cwd=work, check=True, capture_output=True, timeout=120)
    (log,) = (work / "logs").glob("*.txt")
    added = submit.add([str(log)], "tiny-cpu", "public-style baseline", unofficial=True, root=root,
                       launch={"convention": "modded", "script": "train_gpt.py", "data_dir": "data/fineweb10B",
                               "logs": "logs"})
    assert added.record.launch["convention"] == "modded" and "train_gpt.py" in added.record.files
    p = speedrun(root, *attempt_args(track_corpus, "--runs", "1", "--baseline", "tiny-cpu/0001"))
    m = json.loads(p.stdout)
    base = [r for r in m["runs"] if r["role"] == "baseline"]
    assert [r["outcome"] for r in m["runs"]] == ["ok"] * 2, [r["message"] for r in m["runs"]]
    assert m["baseline"]["launch"]["convention"] == "modded"
    folder = Path(m["dir"])
    for r in base:
        assert r["seeded"] is False and r["val_loss"] > 0 and r["train_time_ms"] > 0
        assert (folder / r["log"]).is_file() and r["log_sha256"] == sha(folder / r["log"])
        text = (folder / r["log"]).read_text()
        assert text.startswith('"""A stand-in for a public record') and "\nRESULT " not in text
        assert r["command"][-1].endswith("baseline/train_gpt.py")  # no flags after the script
    cand = next(r for r in m["runs"] if r["role"] == "candidate")
    assert "--preset" in cand["command"] and "--seed" in cand["command"]
    assert not list((folder / "baseline" / "logs").glob("*.txt"))  # moved, not copied
    assert m["verdict"]["speedup"]["pairs"] == 1 and "step:4/4" in (folder / base[0]["console"]).read_text()
