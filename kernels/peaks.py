"""Dense peaks of the GPUs this project times on (no sparsity): bf16 and fp8 tensor-core TFLOP/s, HBM GB/s.
Its own module so that the trainer (through kernels/node.py) gets the table without the benchmark harness
(kernels/bench.py): a run's log embeds every kernels/*.py the trainer imported.
"""
from __future__ import annotations

import torch

# Matched by substring of torch.cuda.get_device_name(), first match wins (so "H100 PCIe" before the SXM's "H100").
PEAKS = [
    ("H100 PCIe", dict(bf16=756.0, fp8=1513.0, mem=2039.0)),
    ("H100 NVL", dict(bf16=835.0, fp8=1671.0, mem=3900.0)),
    ("H100", dict(bf16=989.4, fp8=1978.9, mem=3352.0)),  # SXM5 80GB HBM3
    ("H200", dict(bf16=989.4, fp8=1978.9, mem=4800.0)),
    ("A100-SXM4-80GB", dict(bf16=312.0, fp8=None, mem=2039.0)),
    ("A100-SXM4-40GB", dict(bf16=312.0, fp8=None, mem=1555.0)),
    ("L4", dict(bf16=121.0, fp8=242.5, mem=300.0)),
]


def peaks_for(device_name: str) -> dict | None:
    for key, peaks in PEAKS:
        if key in device_name:
            return peaks
    return None


def peak(device: torch.device, kind: str) -> float | None:
    """The device's dense peak (TFLOP/s for bf16/fp8, GB/s for mem), or None (a CPU, an unknown GPU)."""
    if device.type != "cuda":
        return None
    return (peaks_for(torch.cuda.get_device_name(device)) or {}).get(kind)
