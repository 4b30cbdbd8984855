"""Gradient communication overlaps the backward under torch.compile (issue 21). Compiled as one graph, the
model's backward is one autograd node: every post-accumulate-grad hook, and so every reduce-scatter, fires
after all of it. Compiled block by block (the trainer's `compile_blocks`), a chunk's reduce-scatter starts as
its blocks' backward ends, while the earlier blocks' backward graphs still run. Seen in a profile of 2 gloo
ranks: how many compiled backward graphs start after the first reduce-scatter was launched."""
import json
from dataclasses import replace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import train_gpt as tg

H = replace(tg.PRESETS["gpt2-small-smoke"], num_layers=4, short_window_layers=(1,), num_value_embeds=1,
            vocab_size=256, eot_token=255, seq_len=256, grad_accum=2)


def _step(rank, world, init, out, mode):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    tg.RANK, tg.WORLD_SIZE = rank, world
    torch.manual_seed(0)
    model = tg.GPT(H, H.seq_len, tg.DenseAttention(H.eot_token, H.window_block))
    comm = tg.Comm()
    launch = comm.reduce_scatter

    def reduce_scatter(o, i):
        with torch.profiler.record_function("speedrun.reduce_scatter." + ("muon" if i.ndim == 3 else "adam")):
            return launch(o, i)

    comm.reduce_scatter = reduce_scatter
    opts = tg.build_optimizers(model, H, comm)
    if mode == "blocks":
        tg.compile_blocks(model, backend="aot_eager")  # AOTAutograd's backward nodes, as inductor's
        run = model
    else:
        run = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=False)
    seq = torch.randint(0, H.vocab_size, (1, H.seq_len + 1), generator=torch.Generator().manual_seed(rank))
    seq[0, ::50] = H.eot_token
    windows = torch.tensor([128, 64])

    def step():
        for o in opts:
            o.arm(True)
        run(seq[:, :-1], seq[:, 1:], windows).backward()
        for o in opts:
            for u in range(len(o.units)):
                o._reduced(u)
            o.zero_grad()

    step()  # compiles
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    rs = [e.time_range.start for e in events if e.name.startswith("speedrun.reduce_scatter.")]
    muon = [e.time_range.start for e in events if e.name == "speedrun.reduce_scatter.muon"]
    bwd = [e.time_range.start for e in events if e.name == "CompiledFunctionBackward"]
    with open(out.format(rank), "w") as f:
        json.dump({"reduce_scatters": len(rs), "backward_graphs": len(bwd),
                   "backward_graphs_after_first_rs": sum(t > rs[0] for t in bwd),
                   "backward_graphs_after_first_muon_rs": sum(t > muon[0] for t in bwd)}, f)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("mode", ["whole", "blocks"])
@pytest.mark.slow
def test_reduce_scatters_start_while_earlier_blocks_backward_runs(mode, tmp_path):
    """Whole-model compile: one backward graph, and no reduce-scatter before it ends (the defect). Block by
    block: the first reduce-scatter (the last layer's chunk) is launched before the earlier blocks' backward
    graphs start: the head's bucket before every block's backward, the last block's Muon chunk (a chunk a
    layer on 2 ranks) before blocks 0-2's."""
    out = str(tmp_path / "rank{}.json")
    mp.spawn(_step, args=(2, f"file://{tmp_path}/store", out, mode), nprocs=2)
    r = json.loads((tmp_path / "rank0.json").read_text())
    assert r["reduce_scatters"] == len(tg.build_optimizers(tg.GPT(H, H.seq_len), H, type(
        "Two", (), {"rank": 0, "world": 2})())[0].units) + 8  # Adam's buckets + Muon's 4 chunks × 2 shapes
    if mode == "whole":
        assert r["backward_graphs"] == 1 and r["backward_graphs_after_first_rs"] == 0, r
    else:  # the head's, then blocks 3, 2, 1, 0 and the stem's: the last block's chunk is reduced before 0-2's
        assert r["backward_graphs"] == 6 and r["backward_graphs_after_first_muon_rs"] >= 3, r


def _adam(rank, world, init, out):
    """One rank of the optimizer test: the trainer's optimizer_step on a tiny model in bf16 activations."""
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    tg.RANK, tg.WORLD_SIZE = rank, world
    torch.manual_seed(0)
    model = tg.GPT(H, H.seq_len, act_dtype=torch.bfloat16)
    comm, log = tg.Comm(), []
    gather = comm.all_gather

    def all_gather(o, i):
        log.append(("all_gather", str(i.dtype).removeprefix("torch."), i.ndim))
        return gather(o, i)

    comm.all_gather = all_gather
    adam, muon = opts = tg.build_optimizers(model, H, comm)
    ns = muon.ns
    muon.ns = lambda *a: (log.append(("polar_express",)), ns(*a))[1]
    adam_wait = adam.wait
    adam.wait = lambda: (log.append(("adam_wait",)), adam_wait())[1]
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(rank + p.numel()))
    embed = model.embed.weight
    tg.optimizer_step(opts, 0, H)
    s = adam.units[0].shard.numel()
    with open(out.format(rank), "w") as f:
        json.dump({"log": log, "embed_is_bf16_exact": bool((embed == embed.bfloat16().float()).all()),
                   "master_matches_own_slice_in_bf16": bool((adam.units[0].master.bfloat16().float() ==
                                                             adam.units[0].flat[rank * s:(rank + 1) * s]).all()),
                   "master_is_not_rounded": bool((adam.units[0].master != adam.units[0].master.bfloat16().float()).any())}, f)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_muon_computes_while_adams_all_gathers_travel_and_embeddings_travel_in_bf16(tmp_path):
    """The trainer's optimizer step on 2 gloo ranks: every Adam all-gather is launched before Muon's first
    Polar Express and waited for after Muon's last; the embedding bucket travels in bf16 (the forward casts it
    to bf16 anyway, so it sees the same values) while the head and scalars travel in fp32; the owner keeps
    an fp32 master of its slice."""
    out = str(tmp_path / "rank{}.json")
    mp.spawn(_adam, args=(2, f"file://{tmp_path}/store", out), nprocs=2)
    r = json.loads((tmp_path / "rank0.json").read_text())
    log = [tuple(e) for e in r["log"]]
    adam_gathers = [i for i, e in enumerate(log) if e[0] == "all_gather" and e[2] == 1]
    ns = [i for i, e in enumerate(log) if e[0] == "polar_express"]
    assert adam_gathers and ns and max(adam_gathers) < min(ns) and max(ns) < log.index(("adam_wait",))
    assert [log[i][1] for i in adam_gathers] == ["bfloat16", "float32", "float32"]  # embeddings, head, scalars
    assert r["embed_is_bf16_exact"] and r["master_matches_own_slice_in_bf16"] and r["master_is_not_rounded"]
