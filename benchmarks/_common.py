"""What both benchmarks share: the machine they ran on, a fair clock, and the printed table."""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from sharplib.core.task import resolve_device


@dataclass(frozen=True)
class Machine:
    """The facts a timing needs next to it to mean anything."""

    cpu: str
    cores: int  # cores this process may run on
    threads: int  # torch intra-op threads
    torch: str
    gpu: str | None
    date: str

    def lines(self) -> list[str]:
        gpu = f"{self.gpu} (CUDA {torch.version.cuda})" if self.gpu else "none used"
        return [
            f"date: {self.date}",
            f"cpu: {self.cpu}, {self.cores} cores usable, torch threads: {self.threads}",
            f"gpu: {gpu}",
            f"torch {self.torch}, python {platform.python_version()}",
            f"load average (1 min) at start: {os.getloadavg()[0]:.2f}",
        ]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> Machine:
    return Machine(
        cpu=cpu_name(), cores=len(os.sched_getaffinity(0)), threads=torch.get_num_threads(), torch=torch.__version__,
        gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


def pick_device(name: str) -> torch.device:
    """--device: 'cpu', 'cuda' or 'auto'; asking for CUDA where there is none is an error, not a silent CPU run."""
    device = resolve_device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch on this machine")
    return device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall-clock seconds of `fn` over `repeats` runs after `warmup` untimed ones (kernels, caches, allocator)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(header), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, rows)])


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise SystemExit(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
