"""Minor page faults per training step of a small conv net, plain and with freed memory retained.

Run as a script in a fresh process (a long-lived test process's heap is already fragmented by
earlier tests); prints ``{"plain": faults, "retained": faults, "active": bool}`` as JSON.
"""

import json
import resource

import torch
from torch import nn

from loclab.engine.memory import freed_memory_retained


def faults_per_step(steps: int = 3) -> float:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
    # activations of 50 MB: above glibc's largest mmap threshold (32 MB), so plain malloc maps them afresh
    images = torch.rand(12, 3, 256, 256)

    def step():
        model(images).square().mean().backward()

    for _ in range(3):  # warm: the heap grows to a step's peak
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


if __name__ == "__main__":
    plain = faults_per_step()
    with freed_memory_retained() as active:
        retained = faults_per_step()
    print(json.dumps({"plain": plain, "retained": retained, "active": active}))
