"""The trainer's kernel choice (issue 21): made once, on rank 0, and broadcast; raced against the torch path
it replaces as the compiled trainer runs it (the reference under torch.compile); the CUDA allocator set to
expandable segments."""
import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import train_gpt as tg
from kernels import capability, xxt


def _choose(rank, world, init, out):
    """One rank of the broadcast test: rank 0's select picks xxt, any other rank's would pick softcap_ce."""
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    tg.RANK, tg.WORLD_SIZE = rank, world
    calls = []

    def select(device, mode, say, shapes=None, timed=None):
        calls.append(rank)
        return capability.Kernels(xxt=xxt.xxt) if rank == 0 else capability.Kernels(softcap_ce=object())

    capability.select = select
    kernels = tg.pick_kernels(torch.device("cpu"), "on", lambda line: None, tg.PRESETS["tiny"])
    with open(out.format(rank), "w") as f:
        json.dump({"names": kernels.names(), "calls": calls, "same_fn": kernels.xxt is xxt.xxt}, f)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_rank_zero_decides_and_every_rank_adopts(tmp_path):
    """2 gloo ranks: only rank 0 runs the start-up check and race, and rank 1 uses exactly rank 0's kernels
    (the same entry points), never its own choice."""
    out = str(tmp_path / "rank{}.json")
    mp.spawn(_choose, args=(2, f"file://{tmp_path}/store", out), nprocs=2)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0 == {"names": ["xxt"], "calls": [0], "same_fn": True}
    assert r1 == {"names": ["xxt"], "calls": [], "same_fn": True}


def test_the_race_is_against_the_compiled_reference(monkeypatch):
    """timings() runs the kernel against its module's reference under torch.compile (fullgraph), and puts the
    eager reference back afterwards."""
    compiled = []

    def fake_compile(fn, **kw):
        compiled.append((fn, kw))
        return fn

    monkeypatch.setattr(capability.torch, "compile", fake_compile)
    k_ms, t_ms = capability.timings(xxt, torch.device("cpu"), iters=1, M=32, K=32)
    assert compiled == [(xxt.xxt_reference, {"dynamic": False, "fullgraph": True})]
    assert xxt.xxt_reference is compiled[0][0] and k_ms > 0 and t_ms > 0


def test_cuda_allocator_uses_expandable_segments_unless_the_user_chose():
    """expandable_segments:True is added to PYTORCH_CUDA_ALLOC_CONF, after any other setting; a user's own
    expandable_segments choice is kept."""
    env = {}
    tg.allocator_conf(env)
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    env = {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"}
    tg.allocator_conf(env)
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128,expandable_segments:True"
    env = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:False"}
    tg.allocator_conf(env)
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:False"
