"""Shards (format, errors, atomic writes) and the synthetic corpus (determinism, structure, floor)."""
import copy
import dataclasses
import hashlib
import itertools
import json
import math
import os
import struct

import numpy as np
import pytest

from harness import cli, data
from harness.data import synthetic
from harness.core import files
from harness.core.errors import InputError
from harness.core.track import load_track

SMALL = dict(vocab_size=64, topics=4, branching=3, first_tokens=2, mean_doc_len=20,
             concentration=1.0, train_tokens=50_000, shard_tokens=20_000)


def small_track(out_dir=None, **over):
    t = copy.deepcopy(load_track("tiny-cpu"))
    t["data"]["synthetic"].update(SMALL, **over)
    t["data"]["val_tokens"] = 5000
    if out_dir is not None:
        t["data"]["dir"] = str(out_dir)
    return t


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- shards --------------------------------------------------------------------------------------

def test_shard_round_trip_and_exact_bytes(tmp_path):
    """write → read_header/read_shard (copy and mmap) returns the tokens; the bytes are the
    community format: '<iii' magic, version, n, 253 zero ints, then n '<u2' tokens."""
    toks = np.random.default_rng(0).integers(0, 65536, size=1000)
    toks[:2] = 0, 65535
    p = tmp_path / "synthetic_train_000000.bin"
    digest = data.write_shard(p, toks)
    raw = p.read_bytes()
    assert digest == hashlib.sha256(raw).hexdigest()
    assert len(raw) == 1024 + 2 * len(toks)
    assert struct.unpack("<3i", raw[:12]) == (20240520, 1, 1000)
    assert raw[12:1024] == bytes(1012)
    assert raw[1024:] == toks.astype("<u2").tobytes()
    assert data.read_header(p) == 1000
    for mm in (False, True):
        got = data.read_shard(p, mmap=mm)
        assert got.dtype == np.uint16 and np.array_equal(got, toks)
    assert os.listdir(tmp_path) == [p.name]  # no temp file left behind


def _corrupt(p, case):
    raw = bytearray(p.read_bytes())
    if case == "magic":
        raw[0:4] = struct.pack("<i", 123)
    elif case == "version":
        raw[4:8] = struct.pack("<i", 2)
    elif case == "short header":
        raw = raw[:100]
    elif case == "truncated":
        raw = raw[:-4]
    elif case == "trailing":
        raw += b"\0" * 4
    elif case == "odd":
        raw += b"\0"
    elif case == "missing":
        p.unlink()
        return
    p.write_bytes(bytes(raw))


@pytest.mark.parametrize("case, says", [
    ("magic", ["bad magic", "found 123", "expected 20240520"]),
    ("version", ["unsupported version 2"]),
    ("short header", ["header truncated", "100 bytes", "1024"]),
    ("truncated", ["10 tokens", "holds 8", "truncated"]),
    ("trailing", ["10 tokens", "holds 12", "4 trailing bytes"]),
    ("odd", ["odd byte count", "21 bytes"]),
    ("missing", ["no such shard"]),
])
def test_bad_shards_raise_shard_error_with_file_and_remedy(tmp_path, case, says):
    """Every malformed or missing shard raises ShardError (an InputError, so the CLI exits 2) whose
    message names the file, says exactly what is wrong, and gives the `speedrun data` command."""
    p = tmp_path / "synthetic_val_000000.bin"
    data.write_shard(p, np.arange(10))
    _corrupt(p, case)
    for read in (data.read_header, data.read_shard):
        with pytest.raises(data.ShardError) as e:
            read(p)
        msg = str(e.value)
        assert isinstance(e.value, InputError) and p.name in msg
        assert f"speedrun data make --out {tmp_path}" in msg
        for s in says:
            assert s in msg, (s, msg)


@pytest.mark.parametrize("name, remedies", [
    ("fineweb_val_000000.bin", ["speedrun data fetch --dir"]),
    ("tokens.bin", ["speedrun data make --out", "speedrun data fetch --dir"]),
])
def test_remedy_follows_the_file_name(tmp_path, name, remedies):
    """FineWeb shards point at `speedrun data fetch`; unknown names mention both commands."""
    with pytest.raises(data.ShardError) as e:
        data.read_header(tmp_path / name)
    assert all(r in str(e.value) for r in remedies)


def test_write_shard_rejects_out_of_range_and_is_atomic(tmp_path, monkeypatch):
    """Tokens outside uint16 are refused; a write that dies before the rename leaves neither a
    shard under the real name nor a temp file."""
    for bad in ([0, -1], [65536]):
        with pytest.raises(ValueError):
            data.write_shard(tmp_path / "synthetic_x.bin", bad)

    def boom(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(files.os, "fsync", boom)
    with pytest.raises(OSError):
        data.write_shard(tmp_path / "synthetic_x.bin", [1, 2, 3])
    assert os.listdir(tmp_path) == []


# ---- the synthetic corpus ------------------------------------------------------------------------

def test_corpus_is_deterministic_and_well_formed(tmp_path):
    """Same seed → byte-identical shards and manifest (but for its dir); another seed → other bytes.
    Shards have the configured sizes; both streams start with EOT, no EOTs are adjacent, all < V,
    and documents have the configured mean length."""
    track = small_track()
    a, b, c = (data.generate_from_track(track, out=tmp_path / d, seed=s)
               for d, s in (("a", 7), ("b", 7), ("c", 8)))
    names = sorted(a["shards"])
    assert sorted(os.listdir(tmp_path / "a")) == sorted(names + ["manifest.json"])
    for n in names:
        assert sha(tmp_path / "a" / n) == sha(tmp_path / "b" / n) == a["shards"][n]["sha256"]
        assert sha(tmp_path / "c" / n) != a["shards"][n]["sha256"]
    assert {**a, "dir": 0} == {**b, "dir": 0}
    assert json.loads((tmp_path / "a" / "manifest.json").read_text()) == a

    train_names = [n for n in names if "_train_" in n]
    assert [a["shards"][n]["tokens"] for n in train_names] == [20_000, 20_000, 10_000]
    train = np.concatenate([data.read_shard(tmp_path / "a" / n) for n in train_names])
    val = data.read_shard(tmp_path / "a" / "synthetic_val_000000.bin")
    assert len(val) == 5001 and a["floor"]["val_tokens"] == 5000
    eot = track["data"]["eot_token"]
    for s in (train, val):
        assert s[0] == eot and s.max() < SMALL["vocab_size"]
        assert not np.any((s[1:] == eot) & (s[:-1] == eot))
    lengths = np.diff(np.flatnonzero(train == eot)) - 1  # complete documents' content lengths
    assert abs(lengths.mean() - SMALL["mean_doc_len"]) < 4 * lengths.std() / math.sqrt(len(lengths))
    assert a["floor"]["val_loss"] < a["floor"]["no_context_loss"]


def _brute_force_log_probs(world, x):
    """log P(x[t] | x[:t]) as a ratio of joint probabilities, each summed over every assignment of
    topics to the documents (itertools.product), from the sparse rows directly; a document that
    already holds max_len content tokens ends surely."""
    K = len(world.pi)

    def first(k, v):
        return world.first_p[k][world.first_idx[k] == v].sum()

    def succ(k, u, v):
        return world.succ_p[k, u][world.succ_idx[k, u] == v].sum()

    n_docs = int(np.sum(x == world.eot))

    def joint(prefix):
        total = 0.0
        for z in itertools.product(range(K), repeat=n_docs):
            p, d, length = math.prod(world.pi[k] for k in z), 0, 0
            for t in range(1, len(prefix)):
                u, v = prefix[t - 1], prefix[t]
                q = 1.0 if world.max_len and length == world.max_len else world.q
                if v == world.eot:
                    p *= q if u != world.eot else 0.0
                    d, length = d + 1, 0
                    continue
                if u == world.eot:
                    p *= first(z[d], v)
                else:
                    p *= (1 - q) * succ(z[d], u, v)
                length += 1
            total += p
        return total

    return np.array([math.log(joint(x[: t + 1]) / joint(x[:t])) for t in range(1, len(x))])


@pytest.mark.parametrize("max_doc_len", [0, 3])
def test_floor_matches_brute_force_enumeration(max_doc_len):
    """On a tiny process (V=6, K=3, S=2, F=2), uncapped and with documents capped at 3 content tokens,
    the filtered log-probabilities, hence the floor, equal the brute-force ratios of joint
    probabilities over all topic assignments to 1e-10 (with the cap: for a stream where a complete
    document reaches the cap, so that its forced EOT, probability 1, is among the predictions)."""
    cfg = data.SyntheticConfig(vocab_size=6, topics=3, branching=2, first_tokens=2, mean_doc_len=3,
                               concentration=1.0, train_tokens=1, shard_tokens=1, eot_token=0,
                               val_tokens=17, seed=3, max_doc_len=max_doc_len)
    world = data.make_world(cfg)
    for seed in range(200):  # the first stream with 3..5 documents and a complete one of >= 3 tokens
        x = data.sample_stream(world, 18, np.random.default_rng(seed)).astype(np.int64)
        starts = np.flatnonzero(x == 0)
        if 3 <= len(starts) <= 5 and (np.diff(starts) - 1).max() >= 3:
            break
    else:
        pytest.fail("no suitable stream")
    if max_doc_len:
        assert (np.diff(starts) - 1).max() == max_doc_len and data.doc_positions(world, x).max() <= max_doc_len
    brute = _brute_force_log_probs(world, x)
    np.testing.assert_allclose(data.log_probs(world, x), brute, rtol=0, atol=1e-10)
    assert abs(data.bayes_floor(world, x) + brute.mean()) < 1e-10


def test_floor_is_calibrated_and_context_pays_on_tiny_cpu():
    """On a tiny-cpu-sized val stream: (1) the chain rule: Σ log P(x_t | prefix) equals Σ over
    documents of log Σ_k π_k P(doc | k); (2) calibration: the mean surprisal equals the mean entropy
    of the predictive distributions within 4 standard errors (they differ by a martingale, so any
    mismatch between generator and filter would show as a KL gap); (3) the floor lies well below the
    no-context loss."""
    cfg = data.SyntheticConfig.from_track(load_track("tiny-cpu"))
    world = data.make_world(cfg)
    x = data.sample_stream(world, cfg.val_tokens + 1, np.random.default_rng(123)).astype(np.int64)
    lp = data.log_probs(world, x)

    # (1) per-document marginal likelihoods, in logs
    eot = world.eot
    with np.errstate(divide="ignore"):  # log 0 = -inf: impossible transitions
        logT, logF = np.log(world.trans), np.log(world.first)
    starts = np.append(np.flatnonzero(x == eot), len(x))
    total = 0.0
    for s, e in zip(starts[:-1], starts[1:]):
        c = x[s + 1: e]
        if len(c) == 0:
            continue
        ll = logF[:, c[0]] + logT[:, c[:-1], c[1:]].sum(1) + (len(c) - 1) * math.log(1 - world.q)
        ll += math.log(world.q) if e < len(x) and len(c) < world.max_len else 0.0  # forced EOT: log 1
        total += np.logaddexp.reduce(np.log(world.pi) + ll)
    assert abs(total - lp.sum()) < 1e-8 * abs(total)

    # (2) predictive entropy vs realised surprisal
    post, prev = data.topic_posterior(world, x), x[:-1]
    at_cap = data.doc_positions(world, x)[:-1] == world.max_len
    assert world.max_len and at_cap.sum() > 10  # the track caps documents, and val has capped ones
    H = np.empty(len(prev))
    for lo in range(0, len(prev), 8192):
        sl = slice(lo, lo + 8192)
        p = (1 - world.q) * np.einsum("tk,ktv->tv", post[sl], world.trans[:, prev[sl]])
        p[:, eot] += world.q
        p[prev[sl] == eot] = world.pi @ world.first
        p[at_cap[sl]] = np.eye(len(world.pi @ world.first))[eot]  # the EOT is certain
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
        H[sl] = -(p * np.log(np.where(p > 0, p, 1.0))).sum(1)
    d = -lp - H
    assert abs(d.mean()) < 4 * d.std() / math.sqrt(len(d))

    # (3) context is worth a lot on this corpus
    floor, no_ctx = -lp.mean(), data.bayes_floor(world, x, context=False)
    print(f"\ntiny-cpu val stream: floor {floor:.4f}, no-context {no_ctx:.4f}, "
          f"mean predictive entropy {H.mean():.4f} nats/token")
    assert floor < no_ctx - 0.5


def test_ensure_synthetic_reuses_and_repairs(tmp_path, monkeypatch):
    """ensure_synthetic returns the existing manifest when config and shard headers match, without
    generating; a damaged shard header makes it regenerate the same bytes."""
    track = small_track(tmp_path / "corpus")
    first = data.ensure_synthetic(track)
    real = data.generate_synthetic

    def refuse(*a, **k):
        raise AssertionError("regenerated a sound corpus")

    monkeypatch.setattr(synthetic, "generate_synthetic", refuse)
    assert data.ensure_synthetic(track) == first
    shard = tmp_path / "corpus" / "synthetic_train_000001.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(AssertionError):
        data.ensure_synthetic(track)
    monkeypatch.setattr(synthetic, "generate_synthetic", real)
    assert data.ensure_synthetic(track) == first and sha(shard) == first["shards"][shard.name]["sha256"]


def test_default_out_is_under_the_repo_root(tmp_path, monkeypatch):
    """Without --out the corpus lands in the track's data.dir, relative to the project root."""
    track = small_track(train_tokens=5000)  # read before the root moves
    monkeypatch.setenv("SPEEDRUN_ROOT", str(tmp_path))
    m = data.generate_from_track(track)
    assert m["dir"] == str(tmp_path / "data" / "synthetic")
    assert (tmp_path / "data" / "synthetic" / "manifest.json").is_file()


def test_cli_data_synthetic_json(tmp_path, monkeypatch, capsys):
    """`speedrun data make --out DIR --seed 1 --json` writes the corpus, prints its manifest
    and exits 0."""
    monkeypatch.setattr("harness.core.track.load_track", lambda name: small_track())
    out = tmp_path / "out"
    assert cli.main(["data", "synthetic", "--out", str(out), "--seed", "1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "manifest.json").read_text())
    assert printed["seed"] == 1 and printed["config"]["seed"] == 1
    for name, s in printed["shards"].items():
        assert data.read_header(out / name) == s["tokens"]


def test_documents_are_capped_at_max_doc_len_across_shards(tmp_path):
    """With max_doc_len, no document of the train stream (read across its shard boundaries, where
    documents continue) or of val holds more content tokens than the cap, some reach it exactly,
    and the lengths follow the capped geometric law: mean (1 - (1-q)^C) / q. The track's own val
    stream (v2) is cut by the trainer's val_sequences into spans that all start at a document."""
    cap = 30
    track = small_track(max_doc_len=cap, train_tokens=60_000, shard_tokens=7_000)  # shards cut documents
    m = data.generate_from_track(track, out=tmp_path)
    names = sorted(n for n in m["shards"] if "_train_" in n)
    eot, q = track["data"]["eot_token"], 1 / SMALL["mean_doc_len"]
    train = np.concatenate([data.read_shard(tmp_path / n) for n in names])
    val = data.read_shard(tmp_path / "synthetic_val_000000.bin")
    for s in (train, val):
        starts = np.flatnonzero(s == eot)
        lengths = np.diff(np.append(starts, len(s))) - 1
        assert lengths.max() == cap and (lengths == cap).sum() > 5
    crossing = [n for n in names if data.read_shard(tmp_path / n)[0] != eot]
    assert crossing, "some shard should begin inside a document"
    lengths = np.diff(np.flatnonzero(train == eot)) - 1
    mean = (1 - (1 - q) ** cap) / q
    assert abs(lengths.mean() - mean) < 4 * lengths.std() / math.sqrt(len(lengths))
    # the floor honours the cap: a forced EOT costs nothing, so the floor drops below the cap-blind one
    cfg = data.SyntheticConfig.from_track(track)
    world = data.make_world(cfg)
    blind = dataclasses.replace(world, max_len=0)
    assert data.bayes_floor(world, val) < data.bayes_floor(blind, val)
    assert abs(m["floor"]["val_loss"] - data.bayes_floor(world, val)) < 1e-12


def test_tiny_cpu_val_spans_all_start_at_documents():
    """tiny-cpu caps documents at seq_len - 1 content tokens: cut by the trainer's rule
    (train_gpt.val_sequences, copied here to keep this module free of torch), every val span starts
    at an EOT, so every val token is predicted from its document's start."""
    track = load_track("tiny-cpu")
    cfg = data.SyntheticConfig.from_track(track)
    assert cfg.max_doc_len == 255  # + its EOT = one 256-token val sequence
    world_rng, _, val_rng = data._rngs(cfg.seed)
    val = data.sample_stream(data.make_world(cfg, world_rng), cfg.val_tokens + 1, val_rng)
    starts = np.flatnonzero(val == cfg.eot_token)
    p, n, spans = 0, cfg.val_tokens, []
    while p < n:  # = train_gpt.val_sequences(val, n, 256, eot)
        limit = min(p + 256, n)
        j = np.searchsorted(starts, limit, side="right") - 1
        q = int(starts[j]) if limit < n and starts[j] > p else limit
        spans.append((p, q))
        p = q
    assert all(val[p] == cfg.eot_token for p, _ in spans)
    assert sum(q - p for p, q in spans) == n


def test_uncapped_config_reproduces_track_v1_val_shard():
    """Without max_doc_len (track v1) the generator writes v1's val shard byte for byte: its sha256
    is the one records tiny-cpu/0001 and 0002 logged, so v1 records stay reproducible."""
    track = copy.deepcopy(load_track("tiny-cpu"))
    del track["data"]["synthetic"]["max_doc_len"]
    cfg = data.SyntheticConfig.from_track(track)
    assert cfg.max_doc_len == 0
    world_rng, _, val_rng = data._rngs(cfg.seed)
    val = data.sample_stream(data.make_world(cfg, world_rng), cfg.val_tokens + 1, val_rng)
    body = np.zeros(256, dtype="<i4")
    body[:3] = 20240520, 1, len(val)
    digest = hashlib.sha256(body.tobytes() + val.astype("<u2").tobytes()).hexdigest()
    assert digest == "fe6ebba0497246f37640bf53e891957b3ea0a4866a7ac45e41daea6ba9667ce7"


def test_bad_max_doc_len_is_refused():
    with pytest.raises(InputError, match="max_doc_len"):
        data.SyntheticConfig.from_track(small_track(max_doc_len=-1))
