"""Id lists for people using their own tools, and writers for precomputed submissions.

``attrib-bench export`` writes three files whose orders every precomputed submission follows:

- ``queries.tsv``: query_id, model_id, test_case, prompt_type (test cases and ``val``);
- ``candidates.txt``: the columns of a dense similarity: all distractors, then exemplars;
- ``positives.tsv``: query_id, exemplar_id (the order of a top-K file's positive_scores).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.fileio import write_text_atomic
from benchmark.splits import Benchmark


def export_ids(bench: Benchmark, out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    queries = ["query_id\tmodel_id\ttest_case\tprompt_type"] + [
        f"{q.query_id}\t{q.model_id}\t{q.part.value}\t{q.prompt_type.value}"
        for q in bench.evaluated_queries
    ]
    positives = ["query_id\texemplar_id"] + [f"{q}\t{e}" for q, e in bench.positives()]
    files = {
        "queries.tsv": queries,
        "candidates.txt": list(bench.candidate_ids),
        "positives.tsv": positives,
    }
    paths = []
    for name, lines in files.items():
        path = out / name
        write_text_atomic(path, "".join(f"{line}\n" for line in lines))
        paths.append(path)
    return paths


def dense_scores(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Cosine similarities [Q, C] in float32 (for writing a dense similarity file)."""
    import torch

    from benchmark.scoring import normalize

    q = normalize(torch.from_numpy(np.asarray(queries)))
    c = normalize(torch.from_numpy(np.asarray(candidates)))
    return (q @ c.T).numpy()


def topk_file_tensors(bench: Benchmark, scores: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """The tensors of a top-K similarity file, from a dense [Q, C] score matrix."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    column = {c: i for i, c in enumerate(bench.candidate_ids)}
    row = {q.query_id: i for i, q in enumerate(bench.evaluated_queries)}
    pos = np.array([scores[row[q], column[e]] for q, e in bench.positives()], scores.dtype)
    return {
        "indices": order.astype(np.int64),
        "scores": np.take_along_axis(scores, order, 1),
        "positive_scores": pos,
    }
