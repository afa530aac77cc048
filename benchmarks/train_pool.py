"""Training speed: a pool of FCNNs trained together vs one after another, and a LeNet-5 epoch
with in-memory tensors vs the reference notebooks' DataLoader loop.

    python benchmarks/train_pool.py                  # CPU
    python benchmarks/train_pool.py --device cuda    # adds 50 LeNet-5 trained together
    python benchmarks/train_pool.py --quick          # 10 FCNNs, 10000 images: checks that it runs

FCNN: the protocol's training (batch 64, stop when the epoch loss changes by < 5 %, at most 10
epochs) of 50 seeds, with `train.train_batched` (one vmapped SGD step for all models) and with
`train.train_model` one seed after another. Both give the same models up to float rounding; the
table shows the largest difference in test loss.

LeNet-5: one epoch of SGD (batch 64, lr 0.05, weight decay 5e-3) over the 60000 training images.
Ours: `train.train_model` on the dataset held as one normalized tensor (`TrainResult.seconds`: the
epoch only, not the evaluation after it). Baseline, as the reference notebooks train: torchvision's
FashionMNIST with `Compose([ToTensor(), Normalize(...)])`, a `DataLoader(batch_size=64, shuffle=True)`
and an `nn.Module` + `torch.optim.SGD` loop, same network and initialization.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, markdown_table, pick_device, set_threads, sync  # noqa: E402

from sharplib.experiments import protocol  # noqa: E402
from sharplib.core.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, load_task, resolve_cache  # noqa: E402
from sharplib.pools.pool import init_model, train_pool  # noqa: E402
from sharplib.core.task import Task  # noqa: E402
from sharplib.core.train import TrainConfig, train_batched, train_model  # noqa: E402


@dataclass(frozen=True)
class BenchConfig:
    device: torch.device
    quick: bool = False

    @property
    def n_fcnn(self) -> int:
        return 10 if self.quick else 50

    @property
    def n_images(self) -> int:
        return 10_000 if self.quick else 60_000

    @property
    def n_lenet(self) -> int:
        return 10 if self.quick else 50


def subset(task: Task, n: int) -> Task:
    return dataclasses.replace(task, x_train=task.x_train[:n], y_train=task.y_train[:n])


# ---------------------------------------------------------------- FCNN pool

def fcnn_rows(bench: BenchConfig) -> list[list[str]]:
    task = load_task("fcnn", device=bench.device)
    cfgs = [protocol.train_config("fcnn", seed=s, device=str(bench.device)) for s in range(bench.n_fcnn)]
    train_model(init_model("fcnn", cfgs[0]), task, cfgs[0])  # warm-up: kernels, allocator
    sync(bench.device)
    start = time.perf_counter()
    together = train_batched([init_model("fcnn", c) for c in cfgs], task, cfgs)
    sync(bench.device)
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    alone = [train_model(init_model("fcnn", c), task, c) for c in tqdm(cfgs, desc="FCNN one after another", leave=False)]
    sync(bench.device)
    sequential_s = time.perf_counter() - start
    diff = max(abs(a.test_loss - b.test_loss) for (_, a), (_, b) in zip(together, alone))
    epochs = sum(r.epochs for _, r in alone)
    same_epochs = all(a.epochs == b.epochs for (_, a), (_, b) in zip(together, alone))
    n = bench.n_fcnn
    return [
        [f"{n} FCNNs one after another (train_model)", f"{sequential_s:.2f}", f"{sequential_s / n:.3f}", "1.0x", f"{epochs}", ""],
        [f"{n} FCNNs together (train_batched)", f"{batched_s:.2f}", f"{batched_s / n:.3f}", f"{sequential_s / batched_s:.1f}x",
         f"{sum(r.epochs for _, r in together)}", f"{diff:.1e}{'' if same_epochs else ' (epochs differ)'}"],
    ]


# ---------------------------------------------------------------- LeNet-5 epoch

def lenet_cfg(bench: BenchConfig, seed: int = 0) -> TrainConfig:
    return protocol.train_config("lenet5", max_epochs=1, seed=seed, device=str(bench.device))


def ours_epoch(task: Task, bench: BenchConfig) -> float:
    """Seconds of one epoch of `train_model` on the in-memory task (evaluation excluded)."""
    cfg = lenet_cfg(bench)
    _, result = train_model(init_model("lenet5", cfg), task, cfg)
    return result.seconds


def reference_epoch(bench: BenchConfig) -> float:
    """Seconds of one epoch the way the reference notebooks train: torchvision dataset, DataLoader, optimizer."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((FASHION_MNIST_MEAN,), (FASHION_MNIST_STD,))])
    dataset = datasets.FashionMNIST(str(resolve_cache()), train=True, download=False, transform=transform)
    loader = DataLoader(Subset(dataset, range(bench.n_images)), batch_size=64, shuffle=True)
    spec = protocol.spec("lenet5")
    model = init_model("lenet5", lenet_cfg(bench)).to(bench.device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sync(bench.device)
    start = time.perf_counter()
    for x, y in tqdm(loader, desc="reference-style epoch", leave=False):
        x, y = x.to(bench.device), y.to(bench.device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    sync(bench.device)
    return time.perf_counter() - start


def lenet_rows(task: Task, bench: BenchConfig) -> list[list[str]]:
    ours_epoch(subset(task, 640), bench)  # warm-up
    ours = ours_epoch(subset(task, bench.n_images), bench)
    reference = reference_epoch(bench)
    return [
        ["reference notebooks' loop (torchvision dataset + DataLoader)", f"{reference:.2f}", "1.0x"],
        ["sharplib train_model (tensors in memory)", f"{ours:.2f}", f"{reference / ours:.1f}x"],
    ]


def lenet_pool_rows(task: Task, bench: BenchConfig) -> list[list[str]]:
    """GPU: n LeNet-5 trained together for one epoch by train_pool's batched backend (checkpoints included)."""
    n = bench.n_lenet
    single = ours_epoch(subset(task, bench.n_images), bench)
    with tempfile.TemporaryDirectory() as out_dir:
        sync(bench.device)
        start = time.perf_counter()
        entries = train_pool("lenet5", subset(task, bench.n_images), lenet_cfg(bench), list(range(n)), out_dir, backend="batched")
        sync(bench.device)
        pool_s = time.perf_counter() - start
    # A batched model's TrainResult.seconds is the stack's time / n when it finished; the first to finish
    # (min) has not yet waited for the others' evaluation and checkpoint.
    epoch_s = min(e.result.seconds for e in entries) * n
    return [
        ["1 LeNet-5 (train_model)", f"{single:.2f}", f"{single:.2f}", "1.0x"],
        [f"{n} LeNet-5 together (train_pool, batched)", f"{epoch_s:.2f} (with evaluation and checkpoints: {pool_s:.2f})",
         f"{epoch_s / n:.3f}", f"{single * n / epoch_s:.1f}x"],
    ]


# ---------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> BenchConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--quick", action="store_true", help="10 FCNNs, 10000 images: a smoke run, not a measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    return BenchConfig(device=pick_device(args.device), quick=args.quick)


def main(argv: list[str] | None = None) -> None:
    bench = parse_args(argv)
    print("\n".join(["## Training: pools and epochs", *machine(bench.device).lines()]), flush=True)
    fcnn = fcnn_rows(bench)
    task = load_task("lenet5", device=bench.device)  # also fills the cache torchvision reads below
    lenet = lenet_rows(task, bench)
    pool = lenet_pool_rows(task, bench) if bench.device.type == "cuda" else []
    print()
    print(markdown_table(["FCNN on Abalone, protocol training", "seconds", "s/model", "speed-up", "epochs", "max test-loss diff"], fcnn))
    print()
    print(markdown_table([f"LeNet-5, one epoch of {bench.n_images} images", "s/epoch", "speed-up"], lenet))
    if pool:
        print()
        print(markdown_table([f"LeNet-5, one epoch of {bench.n_images} images", "s/epoch", "s per model-epoch", "speed-up"], pool))
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
