"""A stand-in for a public record's train_gpt.py, following the public speedrun's launch convention (tests
run it as a baseline): it takes no flags, reads its shards from data/fineweb10B/ under its working
directory, and writes logs/<uuid>.txt: its own code first, a line of 100 '=', the environment, a line
of 100 '=', then step lines in the public format and no RESULT line. Its "model" is a unigram count
over the train shard, scored on the val shard: a real number from the data, in well under a second."""
import glob
import math
import os
import sys
import time
import uuid

import numpy as np

with open(sys.argv[0]) as f:
    code = f.read()
train = sorted(glob.glob("data/fineweb10B/*train*.bin"))
val = sorted(glob.glob("data/fineweb10B/*val*.bin"))
if not train or not val:
    sys.exit(f"no shards under {os.path.abspath('data/fineweb10B')}")
run_id = uuid.uuid4()
os.makedirs("logs", exist_ok=True)
log = open(f"logs/{run_id}.txt", "w")


def print0(s, console=True):
    if console:
        print(s, flush=True)
    print(s, file=log, flush=True)


print0(code, console=False)
print0("=" * 100, console=False)
print0(f"Running Python {sys.version}", console=False)
print0("Running PyTorch none compiled for CUDA None", console=False)
print0(f"CPU: public-convention test script cores:{os.cpu_count()}", console=False)
print0("=" * 100, console=False)
tokens = np.fromfile(train[0], dtype="<u2", offset=1024)[:200_000]
targets = np.fromfile(val[0], dtype="<u2", offset=1024)[1:20_001]
steps, counts, t_ms = 4, np.ones(int(max(tokens.max(), targets.max())) + 1), 0.0
chunk = len(tokens) // steps
for step in range(steps + 1):
    if step in (0, steps):
        p = counts / counts.sum()
        loss = -float(np.mean(np.log(p[targets])))
        print0(f"step:{step}/{steps} val_loss:{loss:.4f} train_time:{t_ms:.0f}ms step_avg:"
               + (f"{t_ms / step:.2f}ms" if step else "nanms"))
    if step == steps:
        break
    t0 = time.perf_counter()
    np.add.at(counts, tokens[step * chunk:(step + 1) * chunk], 1)
    time.sleep(0.05)
    t_ms += 1000 * (time.perf_counter() - t0)
    print0(f"step:{step + 1}/{steps} train_time:{t_ms:.0f}ms step_avg:{t_ms / (step + 1):.2f}ms")
assert math.isfinite(loss)
log.close()
