"""The seeded synthetic corpus of tiny-cpu, written as shards (harness/data/shards.py).

Each document draws a hidden topic z ~ π, a first token from first_z, then walks
topic z's sparse Markov chain, ending after each content token with probability q = 1/mean_doc_len,
and surely after max_doc_len of them (if set: then every document, its EOT included, fits in one
sequence of max_doc_len + 1 tokens, so every val token can be predicted from its document's start).
Because the process is known, the Bayes-optimal val loss (the track's floor) is computed exactly by
forward filtering over the current document's topic.

numpy only, never torch: the CLI imports this module lazily, only for `speedrun data`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.core.errors import InputError
from harness.core.files import atomic_write
from harness.data.shards import read_header, write_shard

GENERATOR = "harness.data v2"  # v2: max_doc_len (without it, v1's shards byte for byte)


# ---- the synthetic process -----------------------------------------------------------------------

@dataclass(frozen=True)
class SyntheticConfig:
    vocab_size: int
    topics: int
    branching: int
    first_tokens: int
    mean_doc_len: float
    concentration: float
    train_tokens: int
    shard_tokens: int
    eot_token: int
    val_tokens: int
    seed: int
    max_doc_len: int = 0  # content tokens per document at most, then EOT; 0: no cap (track v1)

    @classmethod
    def from_track(cls, track: dict, seed: int | None = None) -> "SyntheticConfig":
        where = track.get("_path", track.get("name", "track"))
        data = track.get("data", {})
        if data.get("source") != "synthetic":
            raise InputError(f"{where}: data.source is {data.get('source')!r}, not 'synthetic'; "
                             f"use the command for that source (e.g. `speedrun data fetch`)")
        syn = data.get("synthetic", {})
        optional = {"max_doc_len"}
        fields = {f.name for f in dataclasses.fields(cls)} - {"eot_token", "val_tokens", "seed"} - optional
        missing = sorted(fields - syn.keys()) + [k for k in ("eot_token", "val_tokens", "seed")
                                                 if k not in data]
        if missing:
            raise InputError(f"{where}: [data]/[data.synthetic] lacks {', '.join(missing)}")
        cfg = cls(**{k: syn[k] for k in fields | (optional & syn.keys())}, eot_token=data["eot_token"],
                  val_tokens=data["val_tokens"], seed=data["seed"] if seed is None else seed)
        content = cfg.vocab_size - 1
        problems = [p for ok, p in [
            (1 < cfg.vocab_size <= 65536, "vocab_size must be in 2..65536 (uint16 tokens)"),
            (0 <= cfg.eot_token < cfg.vocab_size, "eot_token must be < vocab_size"),
            (1 <= cfg.branching <= content, "branching must be in 1..vocab_size-1"),
            (1 <= cfg.first_tokens <= content, "first_tokens must be in 1..vocab_size-1"),
            (cfg.topics >= 1 and cfg.mean_doc_len >= 1 and cfg.concentration > 0,
             "need topics >= 1, mean_doc_len >= 1, concentration > 0"),
            (isinstance(cfg.max_doc_len, int) and cfg.max_doc_len >= 0,
             "max_doc_len must be a whole number >= 1 (or 0: no cap)"),
            (cfg.topics * cfg.vocab_size ** 2 <= 2 ** 27,
             "topics * vocab_size^2 must be <= 2^27: the floor keeps dense (K,V,V) tables"),
            (cfg.train_tokens >= 1 and cfg.shard_tokens >= 1 and cfg.val_tokens >= 1,
             "token counts must be positive"),
        ] if not ok]
        if problems:
            raise InputError(f"{where}: bad [data.synthetic]: {'; '.join(problems)}")
        return cfg


@dataclass
class World:
    """The process's parameters, drawn once from the seed. `first` (K,V) and `trans` (K,V,V) are the
    dense forms of the sparse rows, used by the floor."""
    pi: np.ndarray          # (K,) topic prior
    first_idx: np.ndarray   # (K,F) possible first tokens per topic
    first_p: np.ndarray     # (K,F) their probabilities
    succ_idx: np.ndarray    # (K,V,S) successors of token u under topic k (row eot unused)
    succ_p: np.ndarray      # (K,V,S) their probabilities
    q: float                # P(document ends) after each content token
    eot: int
    max_len: int = 0        # a document ends surely after this many content tokens (0: never forced)
    first: np.ndarray = dataclasses.field(init=False, repr=False)
    trans: np.ndarray = dataclasses.field(init=False, repr=False)

    def __post_init__(self):
        K, V, _ = self.succ_idx.shape
        self.first = np.zeros((K, V))
        np.add.at(self.first, (np.arange(K)[:, None], self.first_idx), self.first_p)
        self.trans = np.zeros((K, V, V))
        np.add.at(self.trans, (np.arange(K)[:, None, None], np.arange(V)[None, :, None],
                               self.succ_idx), self.succ_p)


def _rngs(seed: int):
    """Independent world, train and val streams: changing how much train is drawn never moves val."""
    return [np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(seed).spawn(3)]


def make_world(cfg: SyntheticConfig, rng: np.random.Generator | None = None) -> World:
    rng = _rngs(cfg.seed)[0] if rng is None else rng
    V, K, S, F = cfg.vocab_size, cfg.topics, cfg.branching, cfg.first_tokens
    content = np.delete(np.arange(V), cfg.eot_token)
    pi = rng.dirichlet(np.ones(K))
    # A uniform random subset of size F (or S): the first F of a random permutation, via argsort.
    first_idx = content[np.argsort(rng.random((K, V - 1)), axis=-1)[:, :F]]
    first_p = rng.dirichlet(np.full(F, cfg.concentration), size=K)
    succ_idx = content[np.argsort(rng.random((K, V, V - 1)), axis=-1)[..., :S]]
    succ_p = rng.dirichlet(np.full(S, cfg.concentration), size=(K, V))
    return World(pi, first_idx, first_p, succ_idx, succ_p, 1.0 / cfg.mean_doc_len, cfg.eot_token, cfg.max_doc_len)


def _categorical(rng, cum: np.ndarray) -> np.ndarray:
    """One draw per row of the cumulative probabilities `cum` (rows, n): the first i with u < cum[i]
    (clipped, so round-off in the last sum can never index past the row)."""
    u = rng.random(cum.shape[0])
    return np.minimum((u[:, None] >= cum).sum(1), cum.shape[1] - 1)


def sample_stream(world: World, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly `n_tokens` of concatenated documents (the last one cut off), starting with EOT.

    Vectorised over documents: draw every document's topic and length up front (a geometric length is
    the same law as ending with probability q after each token; capped at max_len, the same law as
    ending surely after max_len), then fill position j of all documents at least j long at once,
    longest first so the active ones are a prefix."""
    z_parts, len_parts, total = [], [], 0
    while total < n_tokens:  # enough documents to cover n_tokens
        m = int((n_tokens - total) * world.q * 1.1) + 16
        z_parts.append(rng.choice(len(world.pi), size=m, p=world.pi))
        L = rng.geometric(world.q, size=m)
        len_parts.append(np.minimum(L, world.max_len) if world.max_len else L)
        total += int(len_parts[-1].sum()) + m
    z, L = np.concatenate(z_parts), np.concatenate(len_parts)
    ends = np.cumsum(L + 1)
    D = int(np.searchsorted(ends, n_tokens)) + 1       # documents needed
    starts = ends[:D] - L[:D] - 1
    L = np.minimum(L[:D], n_tokens - 1 - starts)        # cut the last one at n_tokens
    order = np.argsort(-L, kind="stable")
    z, L, starts = z[:D][order], L[order], starts[order]
    n_active = np.searchsorted(-L, -np.arange(1, int(L.max()) + 1), side="right")  # L >= j

    out = np.empty(n_tokens, dtype=np.uint16)
    out[starts] = world.eot
    if len(n_active) == 0:  # n_tokens == 1: a lone EOT
        return out
    first_cum, succ_cum = np.cumsum(world.first_p, -1), np.cumsum(world.succ_p, -1)
    n = n_active[0]
    x = world.first_idx[z[:n], _categorical(rng, first_cum[z[:n]])]
    out[starts[:n] + 1] = x
    for j in range(2, len(n_active) + 1):
        n = n_active[j - 1]
        zj, prev = z[:n], x[:n]
        x = world.succ_idx[zj, prev, _categorical(rng, succ_cum[zj, prev])]
        out[starts[:n] + j] = x
    return out


# ---- the floor -----------------------------------------------------------------------------------

def topic_posterior(world: World, tokens) -> np.ndarray:
    """(n-1, K): P(topic of the current document | tokens[:t]) before predicting each tokens[t], t>=1.

    Filtering, vectorised over documents: position j of every document at once. The posterior is
    renormalised at each step, so long documents never underflow."""
    x = np.asarray(tokens, dtype=np.int64)
    if len(x) < 2 or x[0] != world.eot:
        raise ValueError("need >= 2 tokens, starting with the end-of-text token (a document start)")
    n, K = len(x), len(world.pi)
    prev, cur = x[:-1], x[1:]
    # lik[t-1, k]: P_k(tokens[t] | tokens[t-1]) for a content token t (the EOT term is topic-free).
    lik = np.where((prev == world.eot)[:, None], world.first[:, cur].T, world.trans[:, prev, cur].T)
    lik[cur == world.eot] = 1.0
    post = np.empty((n - 1, K))
    starts = np.flatnonzero(x == world.eot)
    # Positions starts+1 .. next start (inclusive) belong to the document opened at each start.
    span = np.append(starts[1:], n - 1) - starts
    order = np.argsort(-span, kind="stable")
    starts, span = starts[order], span[order]
    n_active = np.searchsorted(-span, -np.arange(1, int(span.max()) + 1), side="right")
    post[starts[: n_active[0]]] = world.pi             # row t-1 is the posterior before tokens[t]
    for j in range(2, len(n_active) + 1):
        rows = starts[: n_active[j - 1]] + j - 1
        w = post[rows - 1] * lik[rows - 1]
        post[rows] = w / w.sum(1, keepdims=True)
    return post


def doc_positions(world: World, tokens) -> np.ndarray:
    """(n,): how many content tokens of its document tokens[:t+1] holds (0 at an EOT); the stream
    starts with EOT."""
    x = np.asarray(tokens)
    i = np.arange(len(x))
    return i - np.maximum.accumulate(np.where(x == world.eot, i, 0))


def log_probs(world: World, tokens, context: bool = True) -> np.ndarray:
    """(n-1,): log P(tokens[t] | tokens[:t]) under the true process, t = 1..n-1; without `context`
    the topic posterior is replaced by the prior π (the best predictor that ignores the document).
    After max_len content tokens the EOT is certain (probability 1), and any other token impossible."""
    x = np.asarray(tokens, dtype=np.int64)
    prev, cur = x[:-1], x[1:]
    post = topic_posterior(world, x) if context else np.broadcast_to(world.pi, (len(cur), len(world.pi)))
    p_first = (world.pi * world.first[:, cur].T).sum(1)
    q = world.q
    if world.max_len:  # the document so far is max_len long: it ends here, surely
        q = np.where(doc_positions(world, x)[:-1] >= world.max_len, 1.0, world.q)
    p_next = (1 - q) * (post * world.trans[:, prev, cur].T).sum(1)
    p = np.where(prev == world.eot, p_first, np.where(cur == world.eot, q, p_next))
    with np.errstate(divide="ignore"):
        return np.log(p)


def bayes_floor(world: World, tokens, context: bool = True) -> float:
    """Mean loss (nats/token) of the Bayes-optimal predictor on tokens[1:], each from its prefix."""
    return float(-log_probs(world, tokens, context).mean())


# ---- the corpus on disk --------------------------------------------------------------------------

def generate_synthetic(cfg: SyntheticConfig, out_dir) -> dict:
    """Write the train shards, the val shard and manifest.json into `out_dir`; return the manifest."""
    out_dir = Path(out_dir).resolve()
    world_rng, train_rng, val_rng = _rngs(cfg.seed)
    world = make_world(cfg, world_rng)
    shards = {}
    train = sample_stream(world, cfg.train_tokens, train_rng)
    for i, lo in enumerate(range(0, cfg.train_tokens, cfg.shard_tokens)):
        chunk = train[lo: lo + cfg.shard_tokens]
        name = f"synthetic_train_{i:06d}.bin"
        shards[name] = {"tokens": len(chunk), "sha256": write_shard(out_dir / name, chunk)}
    del train
    val = sample_stream(world, cfg.val_tokens + 1, val_rng)  # predict val[1:] from their prefixes
    shards["synthetic_val_000000.bin"] = {
        "tokens": len(val), "sha256": write_shard(out_dir / "synthetic_val_000000.bin", val)}
    manifest = {
        "kind": "synthetic", "seed": cfg.seed, "config": dataclasses.asdict(cfg),
        "dir": str(out_dir), "shards": shards,
        "floor": {"val_loss": bayes_floor(world, val), "no_context_loss": bayes_floor(world, val, False),
                  "val_tokens": cfg.val_tokens},
        "generator": GENERATOR,
    }
    atomic_write(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def _out_dir(track: dict, out) -> Path:
    if out is not None:
        return Path(out)  # a flag: relative to where the user stands
    from harness.core.track import repo_root

    d = Path(track["data"]["dir"])
    return d if d.is_absolute() else repo_root() / d


def generate_from_track(track: dict, out=None, seed: int | None = None) -> dict:
    return generate_synthetic(SyntheticConfig.from_track(track, seed), _out_dir(track, out))


def ensure_synthetic(track: dict, out=None) -> dict:
    """The existing corpus if its manifest matches the track and every shard's header is sound
    (headers only: re-hashing 32 MB on every run is not worth it), else a freshly generated one."""
    cfg, out_dir = SyntheticConfig.from_track(track), _out_dir(track, out)
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text())
        if (manifest.get("generator") == GENERATOR
                and manifest.get("config") == dataclasses.asdict(cfg)
                and all(read_header(out_dir / name) == s["tokens"]
                        for name, s in manifest["shards"].items())):
            return manifest
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # missing, unreadable or stale: regenerate
    return generate_synthetic(cfg, out_dir)


def render(info: dict, console) -> None:
    """`speedrun data make` for people: the shards, their hashes and the floor."""
    console.print(f"[bold]synthetic corpus[/] seed {info['seed']} → {info['dir']}")
    for name, s in info["shards"].items():
        console.print(f"  {name}  {s['tokens']:>10,} tokens  sha256 {s['sha256'][:16]}…")
    f = info["floor"]
    console.print(f"  Bayes-optimal val loss (the floor): [bold]{f['val_loss']:.4f}[/] nats/token "
                  f"over {f['val_tokens']:,} tokens; no-context loss {f['no_context_loss']:.4f}")
