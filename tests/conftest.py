"""Shared fixtures. torch is imported only where a test needs it: the harness's tests run without it.

Markers: `gpu` needs CUDA (skipped without it); `slow` spawns the trainer (`./run.sh test -m "not slow"` is
the inner loop). The public logs and record folders come from tests/fixtures.py (skipped when absent)."""
import copy
import importlib.util
import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

# Without a GPU the Triton kernels run in Triton's interpreter; it must be chosen before any `triton.jit`
# decorator runs, i.e. before a test module imports kernels/. Asking CUDA needs torch: only when a collected
# test module will import it anyway (torch is installed), and never for a harness-only run without torch.
_CUDA = None


def cuda() -> bool:
    global _CUDA
    if _CUDA is None:
        if importlib.util.find_spec("torch") is None:
            _CUDA = False
        else:
            import torch

            _CUDA = torch.cuda.is_available()
    return _CUDA


def pytest_configure(config):
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "" or not _nvidia():
        os.environ.setdefault("TRITON_INTERPRET", "1")


def _nvidia() -> bool:
    """An NVIDIA driver is present (what CUDA needs), asked without importing torch."""
    return pathlib.Path("/proc/driver/nvidia/version").exists()


def pytest_collection_modifyitems(config, items):
    if not any("gpu" in item.keywords for item in items) or cuda():
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
