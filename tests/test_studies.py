"""studies/ema.py: the figures of docs/ema-study.md, computed from hand-made curves."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "studies"))
import ema  # noqa: E402


def curve(raw, averaged):
    return {"test_accuracy_raw": np.array(raw), "test_accuracy_averaged": np.array(averaged),
            "epoch_seconds": np.ones(len(raw))}


def test_per_seed_figures_of_a_ten_epoch_curve():
    raw = [0.1, 0.5, 0.8, 0.9, 0.95, 0.88, 0.93, 0.91, 0.94, 0.90]
    averaged = [0.1, 0.4, 0.7, 0.88, 0.92, 0.92, 0.93, 0.93, 0.935, 0.93]
    row = ema.per_seed(curve(raw, averaged), refit=0.931)
    assert row["last_raw"] == 0.90 and row["last_averaged"] == 0.93 and row["last_averaged_bn_refit"] == 0.931
    assert row["best_on_test"] == 0.95 and row["best_epoch"] == 5  # epochs count from 1
    assert row["tail_epochs"] == 2  # the last 20 % of 10 epochs
    assert row["tail_std_raw"] == pytest.approx(np.std([0.94, 0.90], ddof=1))
    assert row["tail_std_averaged"] == pytest.approx(np.std([0.935, 0.93], ddof=1))


def test_shortest_schedule_is_the_first_epoch_within_half_a_point_of_the_last_on_the_mean_curve():
    a = curve([0] * 6, [0.5, 0.80, 0.90, 0.90, 0.92, 0.92])
    b = curve([0] * 6, [0.5, 0.90, 0.90, 0.92, 0.93, 0.92])
    first, mean = ema.shortest([a, b])
    np.testing.assert_allclose(mean, [0.5, 0.85, 0.90, 0.91, 0.925, 0.92])
    assert first == 5  # 0.91 is 1 point short of the last epoch's 0.92; 0.925 is within 0.5
