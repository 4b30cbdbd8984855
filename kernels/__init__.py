"""Triton kernels, each in `kernels/<op>.py` beside its plain-torch `<op>_reference`.

`kernels.capability` decides once, at start-up, which of them a device may use (a tiny launch must
match the reference first). `kernels.bench` is `speedrun bench`. Nothing here touches CUDA at import.
"""
