"""AbC's "tuned" features: a frozen backbone plus two learned linear heads.

One head maps real images (exemplars and distractors), the other synthesized queries; both
start at the identity and end in L2 normalization, so before training a tuned baseline ranks
exactly like its backbone. AbC never released its training code or settings; ours are:

- **data**: the benchmark's ``train`` part. Each train query's positives are its model's
  exemplars; its negatives are every other train exemplar. Nothing from the test cases or the
  distractor pool is seen in training. Backbone features are extracted once and cached (the
  same cache ``evaluate`` uses), then training runs on them; there is no image augmentation.
- **loss**: multi-positive InfoNCE over cosine similarities at temperature ``tau``:
  ``-log(sum_pos exp(s/tau) / sum_all exp(s/tau))`` per query, averaged over queries; plus
  ``identity_weight * (||W - I||^2 + ||b||^2)`` for each head, which keeps the heads near the
  backbone's geometry (weight decay towards the identity, not towards zero).
- **optimisation**: Adam, shuffled mini-batches of queries, a seeded generator.
- **model selection**: after every epoch, mAP of the ``val`` queries ranked against their
  exemplars and all distractors (the benchmark's own scoring code); the best epoch is kept,
  epoch 0 (the identity) included, so tuning can never be reported as better than it is.
  Training stops after ``patience`` epochs without improvement.
- **calibration**: AbC's calibrator is fitted on the val queries with the selected heads and
  stored in the head file; ``evaluate`` uses it.

Head files are safetensors (``real.weight``, ``real.bias``, ``synth.weight``, ``synth.bias``)
with the training record as JSON metadata (:mod:`baselines.heads`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from baselines.abc_official import official_heads
from baselines.backbone import Baseline
from baselines.catalog import HERE, TUNED_SEP, split_name
from baselines.heads import Heads, HeadsFile, read_heads, save_heads
from baselines.tune_config import TuneConfig
from benchmark.calibration import candidate_sets, fit_calibrator
from benchmark.errors import AttribBenchError
from benchmark.paths import cache_root

SHIPPED_DIR = HERE / "tuned"


def head_dirs(weights: str | Path | None = None) -> list[Path]:
    """Where head files are looked for, first match wins."""
    dirs = []
    if weights is not None and Path(weights).is_dir():
        dirs += [Path(weights), Path(weights) / "tuned"]
    if os.environ.get("ATTRIB_BENCH_WEIGHTS"):
        dirs.append(Path(os.environ["ATTRIB_BENCH_WEIGHTS"]) / "tuned")
    return [*dirs, cache_root() / "tuned", SHIPPED_DIR]


def find_heads(name: str, weights: str | Path | None = None) -> HeadsFile:
    base, bench = split_name(name)
    if bench == "abc":  # AbC's released heads (baselines/abc_official.py)
        return official_heads(name, weights)
    for folder in head_dirs(weights):
        path = folder / f"{name}.safetensors"
        if path.is_file():
            return read_heads(path)
    raise AttribBenchError(
        None,
        name,
        f"no trained heads (looked in {', '.join(str(d) for d in head_dirs(weights))})",
        f"run attrib-bench train-tuned --backbone {base} --benchmark {bench}",
    )


class Tuned:
    """A backbone plus trained heads, as a feature extractor.

    Besides ``embed``/``embed_query`` it exposes ``backbone`` and ``project`` so the harness
    caches the backbone's features once and applies the heads afterwards.
    """

    def __init__(self, backbone, heads: HeadsFile):
        self.backbone, self.heads_file = backbone, heads
        self.heads = heads.heads
        self.name = heads.record.get("name") or heads.path.name.removesuffix(".safetensors")
        self.preprocess = backbone.preprocess
        self.batch_size = backbone.batch_size
        trained_on = heads.record.get("backbone_weights_sha256")
        official = heads.record.get("official")  # AbC's file records no backbone hash
        if trained_on != backbone.weights_sha256 and not backbone.random_weights and not official:
            raise AttribBenchError(
                heads.path,
                "backbone_weights_sha256",
                f"heads were trained on backbone weights {str(trained_on)[:12]}, "
                f"not {str(backbone.weights_sha256)[:12]}",
                "load the weights they were trained on, or train them again",
            )

    @property
    def spec(self) -> dict[str, Any]:
        return {"tuned": self.name, "heads_sha256": self.heads_file.sha256, **self.backbone.spec}

    def stored_calibrator(self, benchmark: str, version: str) -> dict[str, Any] | None:
        """The calibrator fitted with these heads, when they were trained on this benchmark."""
        record = self.heads_file.record
        if (record.get("benchmark"), record.get("version")) != (benchmark, version):
            return None
        return {**record["calibrator"], "source": self.heads_file.path.name}

    def to(self, device) -> Tuned:
        self.backbone.to(device)
        self.heads.to(device)
        return self

    def project(self, features: torch.Tensor, role: str) -> torch.Tensor:
        return self.heads(features.to(self.heads.real.weight.device), role)

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        return self.project(self.backbone.embed(batch), "real")

    def embed_query(self, batch: torch.Tensor) -> torch.Tensor:
        return self.project(self.backbone.embed(batch), "synth")


# --------------------------------------------------------------------------------------------
# training


@dataclass(frozen=True)
class TrainData:
    """Backbone features of one benchmark, as float32 tensors."""

    train_queries: torch.Tensor  # [Nq, D]
    train_positive: torch.Tensor  # [Nq, Ne] bool: exemplar j belongs to query i's model
    train_exemplars: torch.Tensor  # [Ne, D]
    val_queries: torch.Tensor
    val_exemplars: torch.Tensor
    val_index: list[list[int]]  # each val query's rows of val_exemplars
    distractors: torch.Tensor
    val_query_ids: list[str]
    val_exemplar_ids: list[tuple[str, ...]]


def val_counts(data: TrainData, heads: Heads, top_n: int = 0):
    """The benchmark's rank counts of the val queries under ``heads``."""
    from benchmark import scoring

    with torch.no_grad():
        q = heads(data.val_queries, "synth")
        x = heads(data.val_exemplars, "real")
        d = heads(data.distractors, "real")

    def chunks(size: int):
        for a in range(0, len(d), size):
            yield d[a : a + size]

    return scoring.score_features(
        q,
        x,
        data.val_index,
        chunks,
        query_ids=data.val_query_ids,
        exemplar_ids=data.val_exemplar_ids,
        top_n=top_n,
    )


def val_map(data: TrainData, heads: Heads) -> float:
    from benchmark.metrics import per_query_bounds

    counts = val_counts(data, heads)
    lower, _ = per_query_bounds(counts.above, counts.ties, counts.unresolved)
    return float(lower["mAP"].mean())


def train_heads(
    data: TrainData,
    config: TuneConfig,
    progress: Callable[[int, float, float], None] | None = None,
) -> tuple[Heads, dict[str, Any]]:
    """Train heads on ``data``; return the best-on-val heads and the training record."""
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    heads = Heads(data.train_queries.shape[1])
    opt = torch.optim.Adam(heads.parameters(), lr=config.lr)
    best_state = {k: v.clone() for k, v in heads.state_dict().items()}
    best, best_epoch = val_map(data, heads), 0
    history = [{"epoch": 0, "loss": None, "val_mAP": best}]
    n = len(data.train_queries)
    for epoch in range(1, config.epochs + 1):
        heads.train()
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(config.batch_size):
            q = heads(data.train_queries[idx], "synth")
            x = heads(data.train_exemplars, "real")
            logits = q @ x.T / config.temperature
            pos = data.train_positive[idx]
            loss = (
                torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~pos, -1e9), 1)
            ).mean() + config.identity_weight * heads.identity_penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        heads.eval()
        score = val_map(data, heads)
        history.append({"epoch": epoch, "loss": total / n, "val_mAP": score})
        if progress:
            progress(epoch, total / n, score)
        if score > best:
            best, best_epoch = score, epoch
            best_state = {k: v.clone() for k, v in heads.state_dict().items()}
        elif epoch - best_epoch >= config.patience:
            break
    heads.load_state_dict(best_state)
    heads.eval().requires_grad_(False)
    record = {
        "config": asdict(config),
        "selected_epoch": best_epoch,
        "val_mAP_identity": history[0]["val_mAP"],
        "val_mAP_selected": best,
        "history": history,
    }
    return heads, record


def fit_val_calibrator(data: TrainData, heads: Heads, top_n: int) -> dict[str, float]:
    """AbC's calibrator on the val queries under ``heads`` (as ``evaluate`` fits it)."""
    counts = val_counts(data, heads, top_n=top_n)
    return fit_calibrator(*candidate_sets(counts, np.arange(len(data.val_queries)))).to_dict()


def tuned_name(backbone: str, benchmark: str) -> str:
    return f"{backbone}{TUNED_SEP}{benchmark}"


def collect(backbone, bench, device, *, cache: bool = True, progress: bool = True) -> TrainData:
    """Backbone features of ``bench``'s train and val parts and distractors (cached)."""
    from benchmark import features as feat
    from benchmark.progress import progress_bar
    from benchmark.types import Part

    store = feat.FeatureCache(backbone.feature_key) if cache else None
    total = len(bench.queries) + len(bench.exemplar_ids) + len(bench.distractor_ids)
    with progress_bar(total, "backbone features", progress) as bar:
        common = {"cache": store, "device": device, "progress": bar, "source": backbone.name}
        q = feat.extract_table(backbone, bench, "queries", None, role="query", **common)
        x = feat.extract_table(backbone, bench, "exemplars", None, role="gallery", **common)
        d = feat.extract_table(backbone, bench, "distractors", None, role="gallery", **common)

    def part(p: Part):
        queries = [qu for qu in bench.queries if qu.part is p]
        ex_ids = [e for m in bench.models if m.part is p for e in m.exemplar_ids]
        column = {e: i for i, e in enumerate(ex_ids)}
        index = [[column[e] for e in bench.model(qu.model_id).exemplar_ids] for qu in queries]
        return queries, ex_ids, index

    tq, tx, tindex = part(Part.TRAIN)
    vq, vx, vindex = part(Part.VAL)
    if not tq or not vq:
        raise AttribBenchError(
            bench.root / "manifest.json",
            "parts",
            f"{bench.name} has {len(tq)} train and {len(vq)} val queries",
            "tune on a benchmark with train and val parts (abc-mini has both)",
        )
    positive = torch.zeros(len(tq), len(tx), dtype=torch.bool)
    for i, cols in enumerate(tindex):
        positive[i, cols] = True
    return TrainData(
        train_queries=feat.stack(q, [qu.query_id for qu in tq]),
        train_positive=positive,
        train_exemplars=feat.stack(x, tx),
        val_queries=feat.stack(q, [qu.query_id for qu in vq]),
        val_exemplars=feat.stack(x, vx),
        val_index=vindex,
        distractors=feat.stack(d, list(bench.distractor_ids)),
        val_query_ids=[qu.query_id for qu in vq],
        val_exemplar_ids=[bench.model(qu.model_id).exemplar_ids for qu in vq],
    )


def train_tuned(
    backbone_name: str,
    bench,
    out_dir: Path,
    config: TuneConfig | None = None,
    *,
    weights: str | Path | None = None,
    device: str | None = None,
    top_n: int | None = None,
    progress: Callable[[int, float, float], None] | None = None,
    show_progress: bool = True,
) -> Path:
    """Train heads for ``backbone_name`` on ``bench``; write ``NAME.tuned_BENCH.safetensors``."""
    from benchmark import features as feat
    from benchmark import scoring

    config = config or TuneConfig()
    if split_name(backbone_name)[1] is not None:
        raise AttribBenchError(
            None, "--backbone", f"{backbone_name} is already tuned", "name the plain backbone"
        )
    backbone = Baseline(backbone_name, weights)
    dev = feat.pick_device(device)
    backbone.to(dev)
    data = collect(backbone, bench, dev, progress=show_progress)
    heads, record = train_heads(data, config, progress)
    n_top = scoring.DEFAULT_TOP_N if top_n is None else top_n
    record.update(
        backbone=backbone.name,
        backbone_spec=backbone.spec,
        backbone_weights_sha256=backbone.weights_sha256,
        benchmark=bench.name,
        version=bench.version,
        manifest_sha256=bench.manifest_sha256,
        num_train_queries=len(data.train_queries),
        num_train_exemplars=len(data.train_exemplars),
        num_val_queries=len(data.val_queries),
        calibrator={**fit_val_calibrator(data, heads, n_top), "top_n": n_top},
    )
    name = tuned_name(backbone.name, bench.name)
    return save_heads(Path(out_dir) / f"{name}.safetensors", heads, record)


def available_tuned(weights: str | Path | None = None) -> list[tuple[str, Path]]:
    """(name, path) of every head file found, first location wins."""
    seen: dict[str, Path] = {}
    for folder in head_dirs(weights):
        for path in sorted(folder.glob(f"*{TUNED_SEP}*.safetensors")):
            seen.setdefault(path.name.removesuffix(".safetensors"), path)
    return sorted(seen.items())
