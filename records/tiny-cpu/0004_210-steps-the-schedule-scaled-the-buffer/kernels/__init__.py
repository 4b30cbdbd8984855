"""Triton kernels, each in `kernels/<op>.py` beside its plain-torch `<op>_reference`, its TOLERANCE and
its `example`/`outputs` (inputs at a shape; the kernel's or the reference's outputs on them).

`kernels.capability` decides once, at start-up, which of them a device may use (a launch must match the
reference first). `kernels.bench` checks and times them (`speedrun bench`). Nothing here touches CUDA
at import, and this file imports nothing: the harness reads NAMES without torch.
"""

NAMES = ("xxt", "softcap_ce", "fp8_head", "relu2_linear")  # what the trainer may use
ALL = ("xxt", "softcap_ce", "fp8_linear", "fp8_head", "relu2_linear")  # what `speedrun bench` measures
