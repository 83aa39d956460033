"""What a piece of code asks of torch, seen at the dispatcher: host reads of tensor values, and ops run.

A host read (``.item()``, ``float()``, ``bool()``, ``if tensor:``) is one ``aten._local_scalar_dense`` call; on a
GPU each waits for all queued work. Counting dispatched ops shows whether work grows with a batch's size (a
per-sample Python loop) or not.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class DispatchCounter(TorchDispatchMode):
    """Within the block: ``host_reads``, the reads of tensor values by the host, and ``ops``, every op run."""

    def __init__(self):
        super().__init__()
        self.host_reads = 0
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        if func is torch.ops.aten._local_scalar_dense.default:
            self.host_reads += 1
        return func(*args, **(kwargs or {}))
