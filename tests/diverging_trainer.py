"""train_gpt.py whose loss turns nan at one step of the timed run: what `speedrun attempt` must classify
as `diverged` (the trainer's own `diverged: …` line, exit code 3). Tests pass it as `--script`; it takes
the trainer's flags, and DIVERGE_AT_STEP (default 2) says which step's loss is nan. Eager runs only (the
harness's smoke runs are: --max-steps implies --no-compile): the count below is Python, not graph code."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: train_gpt and kernels/

import train_gpt  # noqa: E402

AT = int(os.environ.get("DIVERGE_AT_STEP", "2"))


class DivergingGPT(train_gpt.GPT):
    """Counts the training forwards (one per micro-batch of this rank) and returns nan for every micro-batch
    of timed step AT: the untimed warm-up's steps come first."""
    calls = 0

    def forward(self, *args, **kwargs):
        loss = super().forward(*args, **kwargs)
        if not self.training:  # validation
            return loss
        h = self.h
        micro = h.grad_accum // int(os.environ.get("WORLD_SIZE", "1"))
        step = DivergingGPT.calls // micro - h.warmup_steps
        DivergingGPT.calls += 1
        return loss * float("nan") if step == AT else loss


train_gpt.GPT = DivergingGPT
if __name__ == "__main__":
    train_gpt.main()
