"""The teaching notebook's parameters and exercise checks (notebooks/teaching_sharpness.py).

`TeachingParams.from_namespace` turns the notebook's papermill `parameters` cell into a validated frozen
config (through `config.params_from_namespace`): a misspelt name or a mistyped value stops the notebook
before any work. `Exercises` holds the checks, here rather than in the notebook so that the student's
handout shows no answer: a check prints one line (two with a hint) and never raises, and `summary()` lists
what is still open. With `grading=True` (the instructor's handout) `require` turns a wrong answer into an error.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..core.config import check_device, check_number, check_text
from ..core.notebook import repository_root
from .params import OWNER, NotebookParams



@dataclass(frozen=True)
class TeachingParams(NotebookParams):
    """The lesson's knobs. `factors` and `rho_grid` come out sorted, as floats, without repeats."""

    seed: int = 0
    max_epochs: int = 10
    n_restarts: int = 50
    rho: float = 0.025
    factors: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)
    rescale_layer: int = 1
    rho_grid: tuple[float, ...] = (0.001, 0.003, 0.01, 0.025, 0.05, 0.1)
    grading: bool = False  # True: an exercise that is not correct stops the run (the instructor's handout build)
    results_dir: str = "results/teaching"
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_number(OWNER, "seed", self.seed, minimum=0, integer=True)
        check_number(OWNER, "max_epochs", self.max_epochs, minimum=1, integer=True)
        check_number(OWNER, "n_restarts", self.n_restarts, minimum=2, integer=True)  # part 3 shows a spread over restarts
        check_number(OWNER, "rho", self.rho, minimum=0, strict=True)
        object.__setattr__(self, "factors", _positive_grid("factors", self.factors, "that contains 1 (the model itself)", must_hold=1))
        if self.rescale_layer not in (1, 2) or isinstance(self.rescale_layer, bool):
            raise ValueError(f"{OWNER}.rescale_layer must be 1 or 2 (the FCNN's hidden layers), got {self.rescale_layer!r}")
        object.__setattr__(self, "rho_grid", _positive_grid("rho_grid", self.rho_grid))
        if not isinstance(self.grading, bool):
            raise ValueError(f"{OWNER}.grading must be True or False, got {self.grading!r}")
        check_text(OWNER, "results_dir", self.results_dir)
        check_device(OWNER, "device", self.device)

    @property
    def data_root(self) -> Path:
        """$SHARPLIB_DATA, else the repository's data/ (the kernel may run in notebooks/), else ./data outside a checkout."""
        return Path(os.environ.get("SHARPLIB_DATA") or (repository_root() or Path.cwd()) / "data")


def _positive_grid(name: str, values: Any, extra: str = "", must_hold: float | None = None) -> tuple[float, ...]:
    """`values` as a sorted tuple of distinct floats, or a ValueError naming `name` and what it must be."""
    ok = isinstance(values, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values)
    if ok:
        grid = tuple(sorted({float(v) for v in values}))
        ok = len(grid) >= 2 and (must_hold is None or must_hold in grid)
    if not ok:
        what = " ".join(filter(None, ["a list of at least two distinct numbers > 0", extra]))
        raise ValueError(f"{OWNER}.{name} must be {what}, got {values!r}")
    return grid


# ---------------------------------------------------------------- the exercises' checks
BOX_RADIUS = 0.01  # exercise 1: |δ_i| <= ρ |w_i| = 0.025 × |-0.4|
SLOPE_TOLERANCE = 0.02  # exercise 3: the slope read off the sweep, up to rounding
SAME_FUNCTION = 1e-4  # exercise 2: largest output change of a function-preserving rescaling (float32 rounding)


class Exercises:
    """The lesson's checks: each prints one line (correct, not yet + hint, or no answer yet) and never raises.

    A rerun of a check replaces its earlier verdict, so the summary is always that of the latest answers.
    """

    def __init__(self, grading: bool = False) -> None:
        self.grading = grading
        self.verdicts: dict[int, str] = {}

    def _say(self, exercise: int, verdict: str, text: str) -> bool:
        self.verdicts[exercise] = verdict
        print(f"Exercise {exercise}: {text}")
        return verdict == "correct"

    def _unanswered(self, exercise: int, answer: Any) -> bool:
        if answer is None or (isinstance(answer, str) and not answer.strip()):
            self._say(exercise, "open", "no answer yet.")
            return True
        return False

    def _judge(self, exercise: int, answer: Any, is_correct: Callable[[Any], bool], hint: str, praise: str = "") -> bool:
        if self._unanswered(exercise, answer):
            return False
        try:
            correct = bool(is_correct(answer))
        except Exception:  # an answer of the wrong shape is a wrong answer, not a crash
            correct = False
        if correct:
            return self._say(exercise, "correct", " ".join(filter(None, ["correct.", praise])))
        return self._say(exercise, "not yet", f"not yet ({answer!r}).\n  Hint: {hint}")

    def box_radius(self, answer: Any) -> None:
        """Exercise 1: the largest |δ_i| the adaptive box allows for w_i = -0.4, ρ = 0.025."""
        self._judge(1, answer, lambda a: math.isclose(float(a), BOX_RADIUS, rel_tol=1e-6),
                           "the adaptive box is |δ_i| <= ρ |w_i|; a size is never negative.")

    def rescaled(
        self, answer: Any, network: Any, model: nn.Module, x: torch.Tensor, sharpness_of: Callable[[nn.Module, str], float]
    ) -> None:
        """Exercise 2: `network` computes `model`'s function with other weights, and `answer` holds the relative changes
        of standard and adaptive (steepest) sharpness, as `sharpness_of(net, variant)` measures them."""
        if self._unanswered(2, answer):
            return
        problem = rescaling_problem(network, model, x)
        if problem:
            self._say(2, "not yet", f"not yet: {problem}")
            return
        expected = [relative_change(sharpness_of(model, v), sharpness_of(network, v)) for v in ("standard, steepest", "adaptive, steepest")]
        self._judge(2, answer, lambda a: len(a) == 2 and math.isclose(float(a[0]), expected[0], rel_tol=0.02)
                           and abs(float(a[1]) - expected[1]) < 1e-4,
                           "answer_2 = (|S_std(net) - S_std(model)| / S_std(model), the same for adaptive), both with the "
                           "steepest rule, for the network you rescaled.",
                           f"Standard sharpness moved by {expected[0]:.0%}, adaptive by {expected[1]:.1e}.")

    def slope(self, answer: Any, sweep: Any) -> None:
        """Exercise 3: the log-log slope of adaptive, steepest sharpness between the two smallest ρ of `sweep`."""
        self._judge(3, answer, lambda a: abs(float(a) - sweep_slope(sweep)) < SLOPE_TOLERANCE,
                           "take the two rows of `sweep` with variant 'adaptive, steepest' and the smallest rho, "
                           "then log(S2 / S1) / log(rho2 / rho1).")

    def written(self, exercise: int, answer: Any) -> None:
        """A question answered in words: recorded, not graded (the instructor's version holds a model answer)."""
        if self._unanswered(exercise, answer):
            return
        words = len(str(answer).split())
        self._say(exercise, "written", f"answer recorded ({words} words); compare it with the model answer in class.")

    def require(self, exercise: int) -> None:
        """When grading, an error unless `exercise` is correct (or answered, for a written one); else nothing."""
        if self.grading and self.verdicts.get(exercise) not in ("correct", "written"):
            raise AssertionError(f"exercise {exercise}: {self.verdicts.get(exercise, 'not checked')}")

    def summary(self) -> None:
        """Prints one line: how many exercises are done, and which are still open or not yet right."""
        done = sorted(n for n, v in self.verdicts.items() if v in ("correct", "written"))
        todo = {v: sorted(n for n, w in self.verdicts.items() if w == v) for v in ("not yet", "open")}
        parts = [f"{len(done)} of {len(self.verdicts)} exercises done"]
        parts += [
            f"{label}: {', '.join(map(str, todo[v]))}" for v, label in (("not yet", "not yet right"), ("open", "unanswered")) if todo[v]
        ]
        print("; ".join(parts))


def rescaling_problem(network: Any, model: nn.Module, x: torch.Tensor) -> str:
    """Why `network` is not a function-preserving rescaling of `model` (empty when it is one)."""
    if not isinstance(network, nn.Module) or type(network) is not type(model):
        return f"`my_network` must be a rescaled copy of `model` (a {type(model).__name__}), got {type(network).__name__}."
    with torch.no_grad():
        reference = model(x)
        change = (network(x) - reference).abs().max().item() / max(reference.abs().max().item(), 1e-12)
        weights = [(p - q).norm().item() / max(q.norm().item(), 1e-12) for p, q in zip(network.parameters(), model.parameters())]
    if not change < SAME_FUNCTION:
        return f"your network computes another function (outputs differ by {change:.1e}, relative): is every factor > 0?"
    if max(weights) < 1e-3:
        return "your network has `model`'s weights: rescale a hidden layer with factors other than 1."
    return ""


def relative_change(before: float, after: float) -> float:
    return abs(after - before) / abs(before)


def sweep_slope(sweep: Any, variant: str = "adaptive, steepest") -> float:
    """log(S2/S1) / log(ρ2/ρ1) for the two smallest ρ of `variant` in the ρ sweep's table."""
    rows = sweep[sweep.variant == variant].sort_values("rho").head(2)
    (rho_1, rho_2), (s_1, s_2) = rows.rho.to_numpy(), rows.sharpness.to_numpy()
    return math.log(s_2 / s_1) / math.log(rho_2 / rho_1)
