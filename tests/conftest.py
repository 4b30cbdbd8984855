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


# glibc serves each allocation over 32 MB (the gpt2-small smoke preset's logits: 512 × 50304 fp32 per
# micro-batch) with a fresh mmap, zero-filled page by page: on CPU that was half of a trainer's wall time,
# all of it in the kernel. Spawned trainers inherit these (same losses, ~2x faster).
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "2147483647", "MALLOC_TRIM_THRESHOLD_": "4294967296",
          "MALLOC_TOP_PAD_": "536870912"}


def pytest_configure(config):
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "" or not _nvidia():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    for k, v in MALLOC.items():
        os.environ.setdefault(k, v)


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


# What `slow` means, checked: a test that starts the trainer — its script (or a wrapper of it), torchrun,
# a `speedrun` verb that runs it, or its ranks under gloo — is marked slow, so `-m "not slow"` stays quick.
TRAINERS = {"train_gpt.py", "faulty_trainer.py", "public_script.py", "tiny_nanogpt.py", "torch.distributed.run"}
TRAINING_VERBS = {"attempt", "run", "main", "doctor"}


def starts_the_trainer(argv: list[str]) -> bool:
    if any(pathlib.PurePath(a).name in TRAINERS for a in argv):
        return True
    i = argv.index("harness.cli") if "harness.cli" in argv else -1
    return i >= 0 and i + 1 < len(argv) and argv[i + 1] in TRAINING_VERBS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Set-up included, so a fixture that runs the trainer counts for the first test that asks for it."""
    if "slow" in item.keywords:
        yield
        return
    import subprocess

    def refuse(what):
        raise AssertionError(f"{item.nodeid} starts the trainer ({what}) but is not marked slow")

    def guarded(self, args, *a, **kw):
        argv = [str(x) for x in args] if isinstance(args, (list, tuple)) else str(args).split()
        if starts_the_trainer(argv):
            refuse(" ".join(argv[:4]))
        popen(self, args, *a, **kw)

    popen, tmp = subprocess.Popen.__init__, sys.modules.get("torch.multiprocessing")
    subprocess.Popen.__init__ = guarded
    if tmp is not None:  # the test modules imported it: gloo ranks
        spawn, tmp.spawn = tmp.spawn, lambda fn, *a, **kw: refuse(f"{fn.__name__} on gloo ranks")
    try:
        yield
    finally:
        subprocess.Popen.__init__ = popen
        if tmp is not None:
            tmp.spawn = spawn


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
