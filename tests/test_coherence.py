"""splits.generate.coherence: the set coherence and per-model recall behind docs/abc-mini-0.3.md."""

import pytest
import torch

from splits.generate.coherence import artist_neighbours, coherence, per_model_recall


def test_coherence_is_the_mean_over_distinct_pairs():
    a, b, c = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([0.6, 0.8])
    # pairs: a.b = 0, a.c = 0.6, b.c = 0.8 (the diagonal, 1 each, is left out)
    assert coherence([a, b, c]) == pytest.approx((0 + 0.6 + 0.8) / 3)
    assert coherence([a, -a]) == pytest.approx(-1.0)


def test_per_model_recall_averages_the_share_of_exemplars_in_the_top_k_over_queries():
    result = {
        "queries": [
            {"model_id": "m", "exemplars": [{"rank": 1}, {"rank": 11}]},  # 1 of 2 in the top 10
            {"model_id": "m", "exemplars": [{"rank": 10}, {"rank": 3}]},  # 2 of 2 (rank 10 is in)
            {"model_id": "n", "exemplars": [{"rank": 500}]},
        ]
    }
    assert per_model_recall(result, 10) == {"m": pytest.approx(0.75), "n": 0.0}
    assert per_model_recall(result, 1) == {"m": pytest.approx(0.25), "n": 0.0}


def test_artist_neighbours_counts_the_artists_drawings_in_the_top_k_with_pessimistic_ties():
    query = torch.tensor([[1.0, 0.0]])
    exemplars = torch.tensor([[0.6, 0.8], [-1.0, 0.0]])  # scores 0.6, -1
    # scores 1 (the artist's), 0.6 (ties the first exemplar), 0 (the artist's), -0.6
    distractors = torch.tensor([[1.0, 0.0], [0.6, -0.8], [0.0, 1.0], [-0.6, 0.8]])
    same = torch.tensor([True, False, True, False])
    # ranking: d0, d1, e1 (below the tied d1), d2, d3, e2
    top, recall, without = artist_neighbours(query, exemplars, distractors, same, k=2)
    assert top.tolist() == [1] and recall.tolist() == [0.0]
    assert without.tolist() == [0.5]  # without d0 and d2: d1, e1, d3, e2
    top, recall, without = artist_neighbours(query, exemplars, distractors, same, k=3)
    assert top.tolist() == [1] and recall.tolist() == [0.5] and without.tolist() == [0.5]
    top, _, without = artist_neighbours(query, exemplars, distractors, same, k=6)
    assert top.tolist() == [2] and without.tolist() == [1.0]
