import copy
import os
import pathlib
import sys

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

# Without a GPU the Triton kernels run in Triton's interpreter; it must be chosen before any
# `triton.jit` decorator runs, i.e. before a test module imports kernels/.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The tiny-cpu corpus, with fewer train tokens (3 shards, so readers cross shard boundaries)."""
    from harness import data
    from harness.core.track import load_track

    track = copy.deepcopy(load_track("tiny-cpu"))
    track["data"]["synthetic"].update(train_tokens=300_000, shard_tokens=100_000)
    out = tmp_path_factory.mktemp("corpus")
    data.generate_from_track(track, out=str(out))
    return out
