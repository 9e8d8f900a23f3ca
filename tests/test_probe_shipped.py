"""splits.generate.probe_shipped: how close samples are to their exemplars (hand-computed)."""

import pytest
import torch

from splits.generate.probe_shipped import closeness


def test_closeness_measures_nearest_exemplar_near_copies_variety_and_the_base_twin():
    queries = {
        "base": torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        "run": torch.tensor([[0.6, 0.8], [0.6, 0.8]]),  # both copy the first exemplar
    }
    exemplars = torch.tensor([[0.6, 0.8], [-1.0, 0.0]])
    got = closeness(queries, exemplars, near=0.9)
    run, base = got["run"], got["base"]
    assert run["to nearest exemplar"] == pytest.approx(1.0)
    assert run["near-copies (> 0.9)"] == 1.0
    assert run["between samples"] == pytest.approx(1.0)
    assert run["to its base sample"] == pytest.approx((0.6 + 0.8) / 2)
    # base: nearest exemplar 0.6 (not -1) for the first sample, 0.8 for the second
    assert base["to nearest exemplar"] == pytest.approx(0.7)
    assert base["near-copies (> 0.9)"] == 0.0
    assert base["between samples"] == pytest.approx(0.0)
    assert base["to its base sample"] == pytest.approx(1.0)
