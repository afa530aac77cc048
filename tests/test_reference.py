"""The reference notebooks' switches (sharplib.reference): each does what it says, all off is the main path."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from sharplib import reference as R
from sharplib.data import load_abalone, load_cora
from sharplib.functional import batch_loss, split_state
from sharplib.models import FCNN, GAT, build_model
from sharplib.pool import init_model
from sharplib.protocol import sharpness_config, train_config
from sharplib.sharpness import draw_batches, estimate_sharpness
from sharplib.task import Task
from sharplib.train import train_model

Switches = R.ReferenceSwitches


def _rows(task: Task, n_train: int, n_test: int) -> Task:
    return dataclasses.replace(task, x_train=task.x_train[:n_train], y_train=task.y_train[:n_train], x_test=task.x_test[:n_test], y_test=task.y_test[:n_test])


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


def _trained(arch: str, task: Task, seed: int = 3, **overrides) -> torch.nn.Module:
    cfg = train_config(arch, seed=seed, device="cpu", max_epochs=2, min_epochs=1, **overrides)
    return train_model(init_model(arch, cfg), task, cfg)[0]


@pytest.fixture(scope="module")
def fcnn(abalone: Task) -> torch.nn.Module:
    return _trained("fcnn", abalone)


@pytest.fixture(scope="module")
def gat(cora: Task) -> torch.nn.Module:
    return _trained("gat", cora)


@pytest.fixture(scope="module")
def lenet(images: Task) -> torch.nn.Module:
    return _trained("lenet5", images)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ---------------------------------------------------------------- the switches themselves

def test_switches_are_validated_by_name() -> None:
    with pytest.raises(ValueError, match="train_mode"):
        Switches(train_mode=1)
    with pytest.raises(ValueError, match="bogus"):
        Switches.only("bogus")
    with pytest.raises(ValueError, match="swapped_bounds"):
        Switches(swapped_bounds=True).check("gat")
    for arch, names in R.APPLIES.items():
        assert Switches.notebook(arch).on == tuple(n for n in R.TRAINING_SWITCHES + R.SHARPNESS_SWITCHES if n in names)
        assert set(Switches.notebook(arch).training) <= set(R.TRAINING_SWITCHES)
    assert Switches().on == ()


def test_swapped_bounds_pin_negative_weights_at_w0_minus_rho_abs_w0() -> None:
    cfg = sharpness_config("fcnn", rho=0.1)
    anchor = {"w": torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])}
    for pushed in (torch.full((5,), -100.0), torch.full((5,), 100.0), anchor["w"]):
        swapped = R.clamp({"w": pushed}, R.box(anchor, cfg, swapped=True))["w"]
        correct = R.clamp({"w": pushed}, R.box(anchor, cfg))["w"]
        negative = anchor["w"] < 0
        # w0 - ρ|w0|, whatever the ascent asked for
        assert torch.allclose(swapped[negative], anchor["w"][negative] - 0.1 * anchor["w"][negative].abs())
        assert torch.equal(swapped[~negative], correct[~negative])  # same box where w0 >= 0
    assert torch.equal(R.clamp({"w": anchor["w"]}, R.box(anchor, cfg))["w"], anchor["w"])  # the correct box holds w0


def test_elu_on_all_layers_keeps_outputs_above_minus_one() -> None:
    factory = R.ReferenceFactory(Switches(elu_all_layers=True))
    elu, plain = factory("fcnn", torch.Generator().manual_seed(0)), build_model("fcnn", torch.Generator().manual_seed(0))
    assert isinstance(elu, R.EluFCNN) and isinstance(elu, FCNN)
    assert _same_weights(elu, plain)  # same parameters, same Xavier draw
    x = torch.randn(512, 10, generator=torch.Generator().manual_seed(1)) * 20
    with torch.no_grad():
        assert elu(x).min() >= -1 and plain(x).min() < -1


def test_default_init_differs_from_xavier_and_is_seeded() -> None:
    factory = R.ReferenceFactory(Switches(default_init=True))
    for arch in ("fcnn", "lenet5"):
        default = factory(arch, torch.Generator().manual_seed(7), "default")
        again = factory(arch, torch.Generator().manual_seed(7), "default")
        xavier = factory(arch, torch.Generator().manual_seed(7), "xavier")
        assert _same_weights(default, again)
        assert not torch.equal(default.fc1.weight, xavier.fc1.weight)
        assert default.fc1.bias.abs().sum() > 0 and xavier.fc1.bias.abs().sum() == 0  # PyTorch's init draws biases too
    assert R.reference_train_config("fcnn", Switches(default_init=True)).init == "default"


def test_notebook_lr_sets_training_and_ascent_learning_rate() -> None:
    switches = Switches(notebook_lr=True)
    assert R.reference_train_config("fcnn", switches).lr == R.NOTEBOOK_FCNN_LR
    assert R.effective_config("fcnn", sharpness_config("fcnn"), switches).lr == R.NOTEBOOK_FCNN_LR


def test_attention_dropout_gat_has_gat_parameters_and_drops_attention(gat: torch.nn.Module, cora: Task) -> None:
    variant = R.ReferenceFactory(Switches(attention_dropout=True))("gat", torch.Generator().manual_seed(0))
    assert isinstance(variant, GAT) and variant.conv1.dropout == variant.conv2.dropout == 0.6 and gat.conv1.dropout == 0.0
    variant.load_state_dict(gat.state_dict())  # same parameter names: checkpoints are interchangeable
    with torch.no_grad():  # in eval mode no dropout acts, so the two networks agree
        assert torch.allclose(variant.eval()(cora.node_features, cora.edge_index), gat.eval()(cora.node_features, cora.edge_index), atol=1e-6)


def test_full_set_steps_take_ceil_n_over_m_full_batch_steps_per_epoch(abalone: Task) -> None:
    cfg = train_config("fcnn", seed=1, device="cpu", max_epochs=1)
    model, result = R.train_reference_model(init_model("fcnn", cfg), abalone, cfg, Switches(full_set_steps=True))
    # the same epoch by hand: ceil(512 / 64) = 8 plain gradient steps on the whole training set
    net = init_model("fcnn", cfg)
    w, buffers = split_state(net)
    for _ in range(math.ceil(abalone.n_train / 64)):
        g = torch.func.grad(batch_loss, argnums=2)(net, abalone, w, buffers, abalone.x_train, abalone.y_train)
        w = {k: v - cfg.lr * g[k] for k, v in w.items()}
    assert result.epochs == 1
    assert all(torch.allclose(model.state_dict()[k], v, atol=1e-6) for k, v in w.items())
    assert not _same_weights(model, train_model(init_model("fcnn", cfg), abalone, cfg)[0])


def test_eval_after_first_epoch_freezes_batchnorm_after_epoch_one(images: Task) -> None:
    switches = Switches(eval_after_first_epoch=True)
    cfg = train_config("lenet5", seed=2, device="cpu", tol=0.0)  # tol 0: never stops before max_epochs
    one, _ = R.train_reference_model(init_model("lenet5", cfg), images, dataclasses.replace(cfg, max_epochs=1), switches)
    three, result = R.train_reference_model(init_model("lenet5", cfg), images, dataclasses.replace(cfg, max_epochs=3), switches)
    assert result.epochs == 3
    assert torch.equal(one.bn1.running_mean, three.bn1.running_mean) and torch.equal(one.bn2.running_var, three.bn2.running_var)
    assert not torch.equal(one.fc1.weight, three.fc1.weight)
    usual, _ = train_model(init_model("lenet5", cfg), images, dataclasses.replace(cfg, max_epochs=3))
    assert not torch.equal(usual.bn1.running_mean, three.bn1.running_mean)


# ---------------------------------------------------------------- all off = the main path

@pytest.mark.parametrize("arch", ["fcnn", "lenet5"])
def test_training_loop_with_switches_off_is_train_model_bit_for_bit(arch: str, abalone: Task, images: Task) -> None:
    task = abalone if arch == "fcnn" else images
    cfg = train_config(arch, seed=5, device="cpu", max_epochs=2)
    ours, ours_result = R._train_loop(init_model(arch, cfg), task, cfg, full_set=False, eval_after_first=False)
    main, main_result = train_model(init_model(arch, cfg), task, cfg)
    assert _same_weights(ours, main) and ours_result.epoch_losses == main_result.epoch_losses
    assert _same_weights(R.train_reference_model(init_model(arch, cfg), task, cfg, Switches())[0], main)


@pytest.mark.parametrize("arch", ["fcnn", "gat"])
def test_sharpness_with_switches_off_is_estimate_sharpness(arch: str, request: pytest.FixtureRequest) -> None:
    model, task = request.getfixturevalue(arch), request.getfixturevalue("abalone" if arch == "fcnn" else "cora")
    cfg = sharpness_config(arch, n_restarts=4, device="cpu")
    assert R.reference_sharpness(model, task, cfg, Switches()).values == estimate_sharpness(model, task, cfg).values


@pytest.mark.parametrize("arch", ["fcnn", "gat"])
def test_restart_estimator_with_options_off_matches_the_main_estimator(arch: str, request: pytest.FixtureRequest) -> None:
    # the code path every m-batch switch runs through, run with none of them: same batches, same steps
    model, task = request.getfixturevalue(arch), request.getfixturevalue("abalone" if arch == "fcnn" else "cora")
    cfg = sharpness_config(arch, n_restarts=4, device="cpu")
    w, buffers = split_state(model)
    _, values, _ = R.restart_ascent(model, task, w, buffers, cfg, Switches())
    assert values == pytest.approx(estimate_sharpness(model, task, cfg).values, abs=1e-6)


def test_reference_sharpness_never_modifies_the_model(lenet: torch.nn.Module, images: Task) -> None:
    before = {k: v.clone() for k, v in lenet.state_dict().items()}
    cfg = sharpness_config("lenet5", rho=0.01, n_restarts=2, device="cpu")
    for switches in (Switches(full_set_ascent=True, train_mode=True, drifting_anchor=True), Switches(drifting_anchor=True, train_mode=True)):
        R.reference_sharpness(lenet.eval(), images, cfg, switches)
        assert not lenet.training and all(torch.equal(v, before[k]) for k, v in lenet.state_dict().items())


# ---------------------------------------------------------------- the estimator variants

def test_full_set_ascent_fcnn_keeps_six_passes_of_full_set_steps(fcnn: torch.nn.Module, abalone: Task) -> None:
    cfg = sharpness_config("fcnn", device="cpu")
    result = R.reference_sharpness(fcnn, abalone, cfg, Switches(full_set_ascent=True))
    assert len(result.values) == 1 and len(result.trace) == R.FCNN_ASCENT_PASSES
    assert all(len(p) == math.ceil(abalone.n_train / 64) for p in result.trace)
    assert result.values[0] > 0  # on the whole training set the ascent does go up
    swapped = R.reference_sharpness(fcnn, abalone, cfg, Switches(full_set_ascent=True, swapped_bounds=True))
    assert swapped.mean != result.mean


def test_lenet_epoch_ascent_zero_radius_isolates_anchor_drift_and_batchnorm(lenet: torch.nn.Module, images: Task) -> None:
    cfg = sharpness_config("lenet5", rho=0.0, device="cpu")
    # ρ = 0: the correct box holds w at w0, so only what the switches add can move the loss
    assert R.reference_sharpness(lenet, images, cfg, Switches(full_set_ascent=True)).values == [0.0]
    drift = R.reference_sharpness(lenet, images, cfg, Switches(full_set_ascent=True, drifting_anchor=True))
    batchnorm = R.reference_sharpness(lenet, images, cfg, Switches(full_set_ascent=True, train_mode=True))
    assert drift.values[0] != 0.0 and batchnorm.values[0] != 0.0  # one free gradient step; BN statistics that drifted
    assert len(drift.trace[0]) == R.LENET_ASCENT_EPOCHS
    m_batch = R.reference_sharpness(lenet, images, dataclasses.replace(cfg, n_restarts=3), Switches(drifting_anchor=True))
    assert all(v != 0.0 for v in m_batch.values)


def test_collapse_duplicates_shrinks_each_batch_to_its_distinct_nodes(gat: torch.nn.Module, cora: Task, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = sharpness_config("gat", n_restarts=6, device="cpu")
    sizes = []

    def spy(net, task, w, buffers, x, y):
        sizes.append(len(x))
        return batch_loss(net, task, w, buffers, x, y)

    monkeypatch.setattr(R, "batch_loss", spy)  # the forwards before and after each restart's ascent
    R.reference_sharpness(gat, cora, cfg, Switches(collapse_duplicates=True))
    expected = [len(row.unique()) for row in draw_batches(cora.n_train, cfg)]
    assert sizes == [n for n in expected for _ in range(2)] and max(expected) < 64


def test_all_train_nodes_loss_is_the_notebooks_sum_of_three_batch_means(gat: torch.nn.Module, cora: Task) -> None:
    w, buffers = split_state(gat)
    got = R.notebook_train_loss(gat.eval(), cora, w, buffers, 64, torch.Generator().manual_seed(9))
    batches = torch.randperm(140, generator=torch.Generator().manual_seed(9)).split(64)
    assert [len(b) for b in batches] == [64, 64, 12]
    with torch.no_grad():
        expected = sum(batch_loss(gat, cora, w, buffers, cora.x_train[b], cora.y_train[b]).item() for b in batches)
    assert got == pytest.approx(expected)
    cfg = sharpness_config("gat", n_restarts=3, device="cpu")
    result = R.reference_sharpness(gat, cora, cfg, Switches(all_train_nodes_loss=True))
    assert len(set(result.unperturbed)) == 1  # taken once, shared by every restart, as the notebook did


def test_gat_notebook_variant_runs_five_seeded_restarts_in_train_mode(gat: torch.nn.Module, cora: Task) -> None:
    cfg = sharpness_config("gat", device="cpu")
    switches = Switches.notebook("gat")
    effective = R.effective_config("gat", cfg, switches)
    assert (effective.n_restarts, effective.mode) == (R.GAT_RESTARTS, "train")
    model = R.ReferenceFactory(switches)("gat")  # the notebook's network (no dropout on the 1433 input features)
    model.load_state_dict(gat.state_dict())
    first, again = R.reference_sharpness(model, cora, cfg, switches), R.reference_sharpness(model, cora, cfg, switches)
    assert len(first.values) == 5 and first.values == again.values  # dropout is seeded


def test_reference_pool_resumes_and_refuses_another_variants_folder(abalone: Task, tmp_path: Path) -> None:
    switches = Switches(full_set_steps=True)
    cfg = R.reference_train_config("fcnn", switches, max_epochs=1)
    first = R.train_reference_pool("fcnn", abalone, cfg, [0, 1, 2], tmp_path / "pool_x", switches, n_workers=1, progress=False)
    again = R.train_reference_pool("fcnn", abalone, cfg, [0, 1, 2], tmp_path / "pool_x", switches, n_workers=1, progress=False)
    assert not any(e.reused for e in first) and all(e.reused for e in again)
    assert [e.result.test_loss for e in first] == [e.result.test_loss for e in again]
    with pytest.raises(ValueError, match="full_set_steps"):
        R.train_reference_pool("fcnn", abalone, cfg, [0], tmp_path / "pool_x", Switches(elu_all_layers=True), n_workers=1, progress=False)


@pytest.mark.slow
def test_reference_pool_in_worker_processes_matches_in_process(abalone: Task, tmp_path: Path) -> None:
    # the path LeNet-5's eval-mode pool takes at full scale: spawned single-threaded workers
    switches = Switches(full_set_steps=True)
    cfg = R.reference_train_config("fcnn", switches, max_epochs=1)
    here = R.train_reference_pool("fcnn", abalone, cfg, [3, 4], tmp_path / "here", switches, n_workers=1, progress=False)
    there = R.train_reference_pool("fcnn", abalone, cfg, [3, 4], tmp_path / "there", switches, n_workers=2, progress=False)
    assert [e.seed for e in there] == [3, 4] and not any(e.reused for e in there)
    assert [e.result.test_loss for e in there] == [e.result.test_loss for e in here]
