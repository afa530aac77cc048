"""The LeNet-5 pool on a GPU: its vmapped SGD steps launched from Python vs replayed from a CUDA graph.

    python benchmarks/cuda_graph.py                  # 50 models, the protocol's training, both ways
    python benchmarks/cuda_graph.py --n-models 8 --max-epochs 1   # a short check

Both rows train the same seeds with `train.train_batched` (the stack the "batched" back end runs),
`cuda_graph=False` and `cuda_graph=True`; the table gives each one's wall time, the ratio, and the
largest difference in weights and test loss between the two pools (the graph replays the eager step's
kernels, so they should agree to float rounding). A second table measures how far the pooled
sharpness estimate of a model drifts from its estimate alone (GPU reductions depend on the batch
shape), the spread that sets the tolerance of tests/test_cuda.py.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, markdown_table, pick_device, sync  # noqa: E402

from sharplib.experiments import protocol  # noqa: E402
from sharplib.core.data import load_task  # noqa: E402
from sharplib.pools.pool import init_model  # noqa: E402
from sharplib.core.sharpness import estimate_pool_sharpness, estimate_sharpness  # noqa: E402
from sharplib.core.train import train_batched  # noqa: E402


def train_pool_seconds(task, n_models: int, max_epochs: int | None, cuda_graph: bool, device: torch.device):
    overrides = {} if max_epochs is None else {"max_epochs": max_epochs, "min_epochs": min(max_epochs, protocol.spec("lenet5").min_epochs)}
    cfgs = [protocol.train_config("lenet5", seed=s, device=str(device), **overrides) for s in range(n_models)]
    models = [init_model("lenet5", c) for c in cfgs]
    sync(device)
    start = time.perf_counter()
    trained = train_batched(models, task, cfgs, cuda_graph=cuda_graph)
    sync(device)
    return time.perf_counter() - start, trained


def sharpness_spread(task, models, device: torch.device) -> list[list[str]]:
    """Largest |pooled − alone| per restart value, for pools of growing size (other batch shapes)."""
    cfg = protocol.sharpness_config("lenet5", n_restarts=4, device=str(device))
    alone = [estimate_sharpness(m, task, cfg).values for m in models]
    rows = []
    for size in (3, 8, len(models)):
        pooled = estimate_pool_sharpness(models[:size], task, cfg)
        diff = max(abs(a - b) for result, ref in zip(pooled, alone) for a, b in zip(result.values, ref))
        scale = max(abs(v) for ref in alone[:size] for v in ref)
        rows.append([str(size), f"{diff:.2e}", f"{scale:.3g}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-models", type=int, default=50)
    parser.add_argument("--max-epochs", type=int, default=None, help="cap the protocol's epochs (default: the protocol's rule)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type != "cuda":
        raise SystemExit("CUDA graphs need a GPU: --device cuda")
    print("\n".join(machine(device).lines()))
    task = load_task("fashion_mnist", root=args.data_root, device=device)
    # One untimed short run per path: kernels loaded, allocator warm.
    for graph in (False, True):
        train_pool_seconds(task, 2, 1, graph, device)
    eager_s, eager = train_pool_seconds(task, args.n_models, args.max_epochs, False, device)
    graph_s, graphed = train_pool_seconds(task, args.n_models, args.max_epochs, True, device)
    weight_diff = max((a - b).abs().max().item() for (ma, _), (mb, _) in zip(eager, graphed)
                      for a, b in zip(ma.state_dict().values(), mb.state_dict().values()) if a.is_floating_point())
    loss_diff = max(abs(ra.test_loss - rb.test_loss) for (_, ra), (_, rb) in zip(eager, graphed))
    same_epochs = sum(ra.epochs == rb.epochs for (_, ra), (_, rb) in zip(eager, graphed))
    epochs = sum(r.epochs for _, r in eager)
    print(f"\nLeNet-5 pool of {args.n_models}, {epochs} model-epochs, {task.n_train // 64 + 1} steps an epoch:\n")
    print(markdown_table(["path", "seconds", "ratio to eager"], [
        ["eager (vmapped step from Python)", f"{eager_s:.1f}", "1.00"],
        ["CUDA graph (GraphedEpoch)", f"{graph_s:.1f}", f"{graph_s / eager_s:.3f}"],
    ]))
    print(
        f"\nlargest weight difference {weight_diff:.2e}, test loss {loss_diff:.2e}; same stopping epoch: {same_epochs} of {args.n_models}"
    )
    print("\nSharpness of the graph-trained models, pooled vs alone (4 restarts each):\n")
    print(
        markdown_table(
            ["models pooled", "max |pooled - alone|", "largest |value|"], sharpness_spread(task, [m for m, _ in graphed], device)
        )
    )


if __name__ == "__main__":
    main()
