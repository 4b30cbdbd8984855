"""Shards ready for a run: the track's folder, with the synthetic corpus made when missing (`ready`), and
stand-in shards in a track's own format and names for a short check run (`stand_in`), FineWeb fetched
for `./run.sh` when missing (`fetched`). The CLI calls these
before it hands a folder to `harness.runs`, which never makes data. numpy only."""
from __future__ import annotations

from pathlib import Path

from harness.core.track import data_dir
from harness.data.shards import write_shard
from harness.data.synthetic import ensure_synthetic


def ready(track: dict, override: str | None = None) -> Path:
    """The shards folder, with the synthetic corpus generated first when the track's corpus is synthetic and
    missing. FineWeb's is fetched by `speedrun data fetch`, never implicitly (harness.runs refuses a folder
    without val shards, naming that command)."""
    d = data_dir(track, override)
    if track["data"]["source"] == "synthetic":
        ensure_synthetic(track, out=str(d))
    return d


def fetched(track: dict, train_shards: int = 8) -> Path:
    """`./run.sh` on an 8-GPU node: FineWeb's val shard and `train_shards` train shards in the track's data
    dir, fetched (as `speedrun data fetch` does) when any is missing."""
    d = data_dir(track)
    have_val = any(d.glob(track["data"].get("val_pattern", "*val*.bin")))
    have_train = len(list(d.glob(track["data"].get("train_pattern", "*train*.bin"))))
    if have_val and have_train >= train_shards:
        return d
    from harness.data import fineweb

    print(f"==> {d}: {have_train} train shard(s){'' if have_val else ', no val shard'}; fetching "
          f"(speedrun data fetch --train-shards {train_shards} --dir {d})", flush=True)
    fineweb.fetch_fineweb(track["name"], out=str(d), train_shards=train_shards, progress=True)
    return d


def stand_in(track: dict, folder: Path, train_tokens: int) -> Path:
    """Shards in the track's own format and names: the synthetic corpus for a synthetic track, else
    random token ids (documents starting at the track's EOT) named like FineWeb's, val long enough."""
    if track["data"]["source"] == "synthetic":
        ensure_synthetic(track, out=str(folder))
        return folder
    import numpy as np

    rng = np.random.default_rng(0)
    eot, vocab = track["data"]["eot_token"], track["data"]["vocab_size"]

    def stream_of(n):
        toks = rng.integers(0, vocab - 1, n, dtype=np.int64)
        toks[rng.random(n) < 1 / 700] = eot
        toks[0] = eot
        return toks

    train = track["data"].get("train_pattern", "fineweb_train_*.bin").replace("*", "000001")
    val = track["data"].get("val_pattern", "fineweb_val_*.bin").replace("*", "000000")
    write_shard(folder / train, stream_of(train_tokens))
    write_shard(folder / val, stream_of(track["data"]["val_tokens"] + 1))
    return folder
