import copy
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The tiny-cpu corpus, with fewer train tokens (3 shards, so readers cross shard boundaries)."""
    from harness import data
    from harness.track import load_track

    track = copy.deepcopy(load_track("tiny-cpu"))
    track["data"]["synthetic"].update(train_tokens=300_000, shard_tokens=100_000)
    out = tmp_path_factory.mktemp("corpus")
    data.generate_from_track(track, out=str(out))
    return out
