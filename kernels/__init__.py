"""Triton kernels, each in `kernels/<op>.py` beside its plain-torch `<op>_reference`, its TOLERANCE and
its `self_check`.

`kernels.capability` decides once, at start-up, which of them a device may use (a launch must match the
reference first). `kernels.bench` checks and times them (`speedrun bench`). Nothing here touches CUDA
at import, and this file imports nothing: the harness reads NAMES without torch.
"""

NAMES = ("xxt", "softcap_ce", "fp8_linear", "relu2_linear")
