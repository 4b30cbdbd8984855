"""Block-granular sliding windows (issue 21): a key block is inside a query block's window or not at all, so
window edges leave no partial block (FlexAttention skips the mask there). The CUDA path's block masks must
attend over exactly the keys of the dense mask the CPU path uses, in both window modes."""
from dataclasses import replace

import pytest
import torch

import train_gpt as tg


def doc_tokens(B, T, seed=0, every=97, eot=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 50, (B, T), generator=g)
    x[:, 0] = eot
    x[:, torch.randint(1, T, (T // every,), generator=g)] = eot
    return x


def test_block_windows_are_whole_blocks_behind_the_query():
    """Dense block-window mask, against a brute-force definition: q attends kv iff kv ≤ q, same document,
    and kv's block is fewer than window/block blocks behind q's block (so up to window + q mod block back)."""
    x = doc_tokens(1, 200, every=60)
    docs = (x == 0).cumsum(1)[0]
    attn = tg.DenseAttention(0, window_block=16)
    mask, short = attn.masks(x, torch.tensor([48, 16]))
    for m, w in ((mask, 48), (short, 16)):
        want = torch.tensor([[kv <= q and docs[q] == docs[kv] and (q // 16 - kv // 16) < w // 16
                              for kv in range(200)] for q in range(200)])
        assert torch.equal(m[0, 0], want)


@pytest.mark.parametrize("block_windows", [False, True], ids=["token-exact", "block-granular"])
def test_flex_block_masks_equal_the_dense_mask(block_windows):
    """FlexAttention with the block masks (its CPU forward) equals SDPA with the dense mask of the same mode,
    for windows of 1 to 7 blocks, across documents, batch of 2."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    x = doc_tokens(2, 512)
    flex, dense = tg.FlexAttention(0, 64, block_windows), tg.DenseAttention(0, 64 if block_windows else None)
    q, k, v = (torch.randn(2, 2, 512, 16, generator=torch.Generator().manual_seed(i)) for i in range(3))
    for windows in ([64, 64], [128, 64], [192, 128], [448, 192]):
        w = torch.tensor(windows)
        for fm, dm in zip(flex.masks(x, w), dense.masks(x, w)):
            want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=dm, scale=0.25)
            assert (flex(q, k, v, fm, 0.25) - want).abs().max() < 1e-5, windows


def block_counts(x, h, block_windows: bool) -> tuple[int, int]:
    """(blocks computed, of which partial) over gpt2-small's window schedule (every 50th step), both masks."""
    flex = tg.FlexAttention.__new__(tg.FlexAttention)  # masks() only: no FlexAttention import needed
    flex.block, flex.block_windows, flex.eot = h.window_block, block_windows, 0
    flex.BlockMask = type("Counts", (), {"from_kv_blocks": staticmethod(lambda pn, pi, fn, fi, **k: (pn, fn))})
    total = partial = 0
    for step in range(0, h.num_steps + 1, 50):
        for pn, fn in flex.masks(x, torch.tensor(tg.attention_windows(step, replace(h, block_windows=block_windows)))):
            partial, total = partial + int(pn.sum()), total + int(pn.sum() + fn.sum())
    return total, partial


def test_block_windows_leave_no_partial_block_at_the_window_edge():
    """Over gpt2-small's window schedule at 8,192 tokens: in one document the block-granular masks' only
    partial blocks are the diagonal ones (token-exact windows add one at every window edge); with documents,
    they compute fewer blocks in all. The gpt2-small preset uses them; tiny keeps token-exact windows (its
    numbers stand)."""
    h = tg.PRESETS["gpt2-small"]
    assert h.block_windows and not tg.PRESETS["tiny"].block_windows
    T, steps = 8192, len(range(0, h.num_steps + 1, 50))
    one_doc = torch.ones(1, T, dtype=torch.long)
    one_doc[0, 0] = 0
    _, blk_partial = block_counts(one_doc, h, True)
    _, tok_partial = block_counts(one_doc, h, False)
    assert blk_partial == 2 * steps * (T // h.window_block) and tok_partial > blk_partial
    x = doc_tokens(1, T, every=900)
    (tok_total, tok_p), (blk_total, blk_p) = block_counts(x, h, False), block_counts(x, h, True)
    assert blk_total < tok_total and blk_p < tok_p
    print(f"blocks computed: token-exact {tok_total} ({tok_p} partial), block-granular {blk_total} ({blk_p} "
          f"partial): token-exact computes {100 * (tok_total / blk_total - 1):.1f} % more")
