"""What the benchmarks print about the machine they ran on."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    """The processor's model name (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_name(device: str) -> str:
    """The GPU's name for ``"cuda"``, else the processor's."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_name()


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so that a timer read after it counts it."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))
