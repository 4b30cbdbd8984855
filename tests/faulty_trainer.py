"""train_gpt.py with a fault at one step of the timed run, for tests that pass it as `--script` (it takes
the trainer's flags). FAULT_AT_STEP (default 2) says which step; FAULT says what happens there:
  nan    (default) the loss turns nan: what `speedrun attempt` must classify as `diverged` (the trainer's
         own `diverged: …` line, exit code 3);
  stall  the step blocks until the process is killed — only in the run whose --seed is FAULT_SEED
         (default 1), so an earlier run finishes and a test can interrupt this one at leisure.
Eager runs only (the harness's smoke runs are: --max-steps implies --no-compile): the count below is
Python, not graph code."""
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: train_gpt and kernels/

import train_gpt  # noqa: E402

AT = int(os.environ.get("FAULT_AT_STEP", "2"))
FAULT = os.environ.get("FAULT", "nan")
SEED = sys.argv[sys.argv.index("--seed") + 1] if "--seed" in sys.argv else "0"


class FaultyGPT(train_gpt.GPT):
    """Counts the training forwards (one per micro-batch of this rank) and faults every micro-batch of
    timed step AT: the untimed warm-up's steps come first."""
    calls = 0

    def forward(self, *args, **kwargs):
        loss = super().forward(*args, **kwargs)
        if not self.training:  # validation
            return loss
        h = self.h
        micro = h.grad_accum // int(os.environ.get("WORLD_SIZE", "1"))
        step = FaultyGPT.calls // micro - h.warmup_steps
        FaultyGPT.calls += 1
        if step != AT:
            return loss
        if FAULT == "stall":
            while SEED == os.environ.get("FAULT_SEED", "1"):
                time.sleep(1)
            return loss
        return loss * float("nan")


train_gpt.GPT = FaultyGPT
if __name__ == "__main__":
    train_gpt.main()
