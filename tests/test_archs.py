"""The architecture list is written once (core/archs.py); Table I, the profiles and the Makefile follow it."""
import re
from pathlib import Path

from sharplib.core.archs import ARCHS
from sharplib.experiments.profiles import PROFILES
from sharplib.experiments.protocol import TABLE1

REPO = Path(__file__).resolve().parents[1]


def test_table1_has_a_row_for_each_architecture_in_order() -> None:
    assert tuple(TABLE1) == ARCHS


def test_every_profile_sets_every_step_for_every_architecture() -> None:
    assert set(PROFILES) == {"full", "quick"}
    for profile, steps in PROFILES.items():
        assert set(steps) == {"study", "ablation", "measures", "progress", "equalized"}, profile
        for step, rows in steps.items():
            assert tuple(rows) == ARCHS, (profile, step)
            assert all(rows[arch].keys() == PROFILES["full"][step][arch].keys() for arch in ARCHS), (profile, step)


def test_the_makefile_lists_the_same_architectures() -> None:
    found = re.search(r"^ARCHS := (.+)$", (REPO / "Makefile").read_text(), flags=re.M)
    assert found is not None and tuple(found.group(1).split()) == ARCHS
