"""The reference notebooks' switches (sharplib.experiments.reference): the table sets what it says on the main path,
and the notebooks' two full-set estimators do what the notebooks did, batched over models."""
from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import pytest
import torch

from sharplib.experiments import reference as R
from sharplib.core.data import load_abalone, load_cora
from sharplib.pools.pool import init_model, train_pool
from sharplib.experiments.protocol import sharpness_config, train_config
from sharplib.core.sharpness import estimate_pool_sharpness, estimate_sharpness
from sharplib.core.task import Task
from sharplib.core.train import TrainConfig, train_model


def _rows(task: Task, n_train: int, n_test: int) -> Task:
    return dataclasses.replace(
        task, x_train=task.x_train[:n_train], y_train=task.y_train[:n_train], x_test=task.x_test[:n_test], y_test=task.y_test[:n_test]
    )


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    # before the module-scoped fixtures below: conftest's per-test setting comes after them, and
    # small ops on 2 contended threads run tens of times slower
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def abalone(data_root: Path) -> Task:
    return _rows(load_abalone(data_root), 512, 128)


@pytest.fixture(scope="module")
def cora(data_root: Path) -> Task:
    return load_cora(data_root)


@pytest.fixture(scope="module")
def images() -> Task:
    """128 random 28×28 'images', 10 classes: enough to run LeNet-5's BN and dropout paths quickly."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(160, 1, 28, 28, generator=g), torch.randint(10, (160,), generator=g)
    return Task("images", x[:128], y[:128], x[128:], y[128:], loss="cross_entropy")


def _trained(arch: str, task: Task, seed: int = 3) -> torch.nn.Module:
    cfg = train_config(arch, seed=seed, device="cpu", max_epochs=2, min_epochs=1)
    return train_model(init_model(arch, cfg), task, cfg)[0]


@pytest.fixture(scope="module")
def fcnns(abalone: Task) -> list[torch.nn.Module]:
    return [_trained("fcnn", abalone, seed) for seed in (3, 4, 5)]


@pytest.fixture(scope="module")
def gat(cora: Task) -> torch.nn.Module:
    return _trained("gat", cora)


@pytest.fixture(scope="module")
def lenet(images: Task) -> torch.nn.Module:
    return _trained("lenet5", images)


# ---------------------------------------------------------------- the table

def test_switches_are_validated_by_name() -> None:
    with pytest.raises(ValueError, match="swapped_bounds"):
        R.setup("gat", ["swapped_bounds"])
    with pytest.raises(ValueError, match="bogus"):
        R.setup("fcnn", ["bogus"])
    with pytest.raises(ValueError, match="'resnet'"):
        R.applicable("resnet")


def test_no_switch_is_the_main_path() -> None:
    for arch in ("fcnn", "lenet5", "gat"):
        assert R.setup(arch, ()) == R.Setup(train={}, variant="standard", data={}, sharpness={}, full_set_ascent=False, retrains=())


def test_each_notebook_sets_what_the_table_says() -> None:
    fcnn = R.setup("fcnn", R.notebook_switches("fcnn"))
    assert fcnn.train == {"init": "default", "step_rows": "train_set", "lr": R.NOTEBOOK_FCNN_LR} and fcnn.variant == "elu_output"
    assert fcnn.sharpness == {"lr": R.NOTEBOOK_FCNN_LR, "swapped_bounds": True} and fcnn.full_set_ascent
    assert fcnn.retrains == ("default_init", "elu_all_layers", "full_set_steps", "notebook_lr")
    lenet = R.setup("lenet5", R.notebook_switches("lenet5"))
    assert lenet.train == {"init": "default", "train_mode_epochs": 1} and lenet.full_set_ascent
    assert lenet.sharpness == {"drifting_anchor": True, "mode": "train"}
    gat = R.setup("gat", R.notebook_switches("gat"))
    # the sensitivity rows are not what the notebook did: binary features and PyG's GAT, as the study
    assert gat.data == {} and gat.variant == "standard" and gat.train == {"init": "default"} and not gat.full_set_ascent
    assert gat.sharpness == {"mode": "train", "n_restarts": R.GAT_RESTARTS, "collapse_duplicates": True, "loss_on_train_set": True}
    assert R.setup("gat", ["row_normalized_features"]).data == {"normalize_features": True}
    assert R.setup("gat", ["input_dropout"]).variant == "input_dropout"
    for arch in ("fcnn", "lenet5", "gat"):  # every setting is a field the main path accepts
        plan = R.setup(arch, R.applicable(arch))
        train_config(arch, **plan.train)
        sharpness_config(arch, **plan.sharpness)


# ---------------------------------------------------------------- the notebooks' full-set estimators

def _full_set_passes_by_hand(model: torch.nn.Module, task: Task, cfg, swapped: bool) -> float:
    """One pass of the FCNN notebook with autograd on the module: ceil(n/m) full-set steps, then clamp in w."""
    net = copy.deepcopy(model).eval()
    w0 = [p.detach().clone() for p in net.parameters()]
    low = [a - cfg.rho * (a if swapped else a.abs()) for a in w0]
    high = [a + cfg.rho * (a if swapped else a.abs()) for a in w0]
    with torch.no_grad():
        start = task.loss_fn(net(task.x_train), task.y_train).item()
    for _ in range(math.ceil(task.n_train / cfg.batch_size)):
        net.zero_grad()
        task.loss_fn(net(task.x_train), task.y_train).backward()
        with torch.no_grad():
            for p, lo, hi in zip(net.parameters(), low, high):
                p.copy_(torch.clamp(p + cfg.lr * p.grad, lo, hi))
    with torch.no_grad():
        return task.loss_fn(net(task.x_train), task.y_train).item() - start


@pytest.mark.parametrize("swapped", [False, True])
def test_full_set_passes_follow_the_fcnn_notebook(fcnns: list[torch.nn.Module], abalone: Task, swapped: bool) -> None:
    cfg = sharpness_config("fcnn", device="cpu", swapped_bounds=swapped)
    one_pass = estimate_pool_sharpness(fcnns[:1], abalone, cfg, estimator=lambda *a, **k: R.full_set_passes(*a, **k, n_passes=1))[0]
    assert one_pass.values[0] == pytest.approx(_full_set_passes_by_hand(fcnns[0], abalone, cfg, swapped), rel=1e-4, abs=1e-6)
    six = estimate_pool_sharpness(fcnns[:1], abalone, cfg, estimator=R.full_set_passes)[0]
    assert len(six.values) == 1 and len(six.trace[0]) == 2 and six.values[0] > 0  # on the whole set the ascent goes up


@pytest.mark.parametrize("estimator", [R.full_set_passes, R.epoch_ascent])
def test_full_set_estimators_batched_over_models_equal_one_at_a_time(estimator, fcnns: list[torch.nn.Module], abalone: Task) -> None:
    cfg = sharpness_config("fcnn", device="cpu", swapped_bounds=True)
    alone = [estimate_pool_sharpness([m], abalone, cfg, estimator=estimator)[0].mean for m in fcnns]
    together = [r.mean for r in estimate_pool_sharpness(fcnns, abalone, cfg, models_per_call=3, estimator=estimator)]
    assert together == pytest.approx(alone, rel=1e-5, abs=1e-7)


def test_lenet_epoch_ascent_zero_radius_isolates_anchor_drift_and_batchnorm(lenet: torch.nn.Module, images: Task) -> None:
    cfg = sharpness_config("lenet5", rho=0.0, device="cpu")
    run = lambda c: estimate_pool_sharpness([lenet], images, c, estimator=R.epoch_ascent)[0]  # noqa: E731
    # ρ = 0: the correct box holds w at w0, so only what the switches add can move the loss
    still = run(cfg)
    assert still.values == [0.0] and len(still.trace[0]) == 1 + R.LENET_ASCENT_EPOCHS
    assert run(dataclasses.replace(cfg, drifting_anchor=True)).values[0] != 0.0  # one free gradient step
    assert run(dataclasses.replace(cfg, mode="train")).values[0] != 0.0  # BatchNorm statistics that drifted


def test_notebook_estimators_never_modify_the_model(lenet: torch.nn.Module, images: Task) -> None:
    before = {k: v.clone() for k, v in lenet.state_dict().items()}
    cfg = sharpness_config("lenet5", device="cpu", mode="train", drifting_anchor=True)
    estimate_pool_sharpness([lenet.eval()], images, cfg, estimator=R.epoch_ascent)
    assert not lenet.training and all(torch.equal(v, before[k]) for k, v in lenet.state_dict().items())


def test_gat_notebook_runs_five_seeded_restarts_in_train_mode(gat: torch.nn.Module, cora: Task) -> None:
    cfg = sharpness_config("gat", device="cpu", **R.setup("gat", R.notebook_switches("gat")).sharpness)
    first, again = estimate_sharpness(gat, cora, cfg), estimate_sharpness(gat, cora, cfg)
    assert len(first.values) == 5 and first.values == again.values  # dropout is seeded
    assert len(set(first.unperturbed)) == 1  # the all-nodes loss at w: taken once, shared by every restart


def test_notebook_estimator_by_arch() -> None:
    assert R.notebook_estimator("fcnn") is R.full_set_passes and R.notebook_estimator("lenet5") is R.epoch_ascent
    with pytest.raises(ValueError, match="'gat'"):
        R.notebook_estimator("gat")


def test_retraining_switches_make_their_own_checkpoints(abalone: Task, tmp_path: Path) -> None:
    plan = R.setup("fcnn", ["elu_all_layers", "full_set_steps"])
    cfg = TrainConfig(lr=0.014, max_epochs=2, device="cpu", **plan.train)
    first = train_pool("fcnn", abalone, cfg, [0, 1], tmp_path, variant=plan.variant, progress=False)
    again = train_pool("fcnn", abalone, cfg, [0, 1], tmp_path, variant=plan.variant, progress=False)
    assert all(e.reused for e in again) and not any(e.reused for e in first)
    standard = train_pool("fcnn", abalone, cfg, [0, 1], tmp_path, progress=False)  # another variant: never reused
    assert not any(e.reused for e in standard)
