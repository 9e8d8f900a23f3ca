"""Regenerate the precomputed example submissions from ``example_extractor`` on abc-tiny.

    python submissions/make_examples.py

Writes ``example_features`` (features + ids files), ``example_similarity`` (a dense float16
score matrix) and ``example_topk`` (top-100 lists). They double as documentation of each
file format and as selfcheck fixtures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from benchmark.benchmarks import resolve_benchmark
from benchmark.evaluation import RunOptions, extract_features
from benchmark.export import dense_scores, topk_file_tensors
from benchmark.submission import load_submission

HERE = Path(__file__).parent
YAML = """schema_version: 1
name: {name}
kind: {kind}
description: {description}
license: MIT
authors: [attrib-bench maintainers]
benchmark: abc-tiny@1.0.0
{body}"""


def main() -> None:
    bench = resolve_benchmark("abc-tiny")
    sub = load_submission(HERE / "example_extractor")
    queries, exemplars, chunks, _ = extract_features(
        sub, bench, RunOptions(progress=False, cache=False)
    )
    distractors = np.concatenate([c.numpy() for c in chunks(1 << 20)])
    candidates = np.concatenate([distractors, exemplars.numpy()])
    qids = [q.query_id for q in bench.evaluated_queries]

    feat = HERE / "example_features"
    feat.mkdir(exist_ok=True)
    save_file(
        {"features": queries.numpy().astype(np.float16)}, str(feat / "query_features.safetensors")
    )
    (feat / "query_ids.txt").write_text("".join(f"{q}\n" for q in qids))
    np.save(feat / "candidate_features.npy", candidates.astype(np.float16))
    (feat / "submission.yaml").write_text(
        YAML.format(
            name="example-features",
            kind="features",
            description="The example extractor's features, precomputed (float16).",
            body="features:\n  queries: {file: query_features.safetensors, ids: query_ids.txt}\n"
            "  candidates: {file: candidate_features.npy}  # export order: no ids file\n",
        )
    )

    scores = dense_scores(queries.numpy(), candidates)
    dense = HERE / "example_similarity"
    dense.mkdir(exist_ok=True)
    np.save(dense / "scores.npy", scores.astype(np.float16))
    (dense / "submission.yaml").write_text(
        YAML.format(
            name="example-similarity",
            kind="similarity",
            description="The example extractor's cosine similarities as a dense float16 matrix.",
            body="similarity: {format: dense, file: scores.npy}\n",
        )
    )

    topk = HERE / "example_topk"
    topk.mkdir(exist_ok=True)
    save_file(topk_file_tensors(bench, scores, k=100), str(topk / "topk.safetensors"))
    (topk / "submission.yaml").write_text(
        YAML.format(
            name="example-topk",
            kind="similarity",
            description="The example extractor's top-100 candidates per query plus exemplar "
            "scores (AP becomes a bound).",
            body="similarity: {format: topk, file: topk.safetensors}\n",
        )
    )


if __name__ == "__main__":
    main()
