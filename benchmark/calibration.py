"""AbC-style calibration: turn raw attribution scores into soft influence shares.

For one query with candidate scores ``s`` the calibrator assigns

    p_i = ReLU(exp((s_i - max_j s_j) / tau) + b) / sum_k ReLU(exp((s_k - max_j s_j) / tau) + b)

A negative threshold ``b`` zeroes low-similarity candidates exactly; ``b > -1`` keeps the top
candidate's term (``1 + b``) positive so the normaliser never vanishes. ``tau`` and ``b`` are
fitted by minimising the mean (over queries) of the mean (over that query's exemplars) of
``-log p_e``. While fitting, the ReLU is replaced by a softplus so that the loss is finite and
differentiable even for exemplars the exact calibrator would zero out.

torch (in :func:`fit_calibrator`) and scikit-learn (in :func:`calibration_metrics`) are imported
lazily so importing this module stays light.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from benchmark.scoring import RankCounts

#: Floor applied to exact (ReLU) probabilities before taking logs when reporting NLL: an
#: exemplar the calibrator zeroes out costs ``-log(EPS)`` (about 27.6) instead of infinity.
EPS: float = 1e-12
#: Sharpnesses of the surrogate ``softplus_beta(x) = log1p(exp(beta * x)) / beta`` used in
#: place of ReLU while fitting, applied in turn (each stage warm-starts the next). The smooth
#: beta=50 stage finds the basin; it alone is biased: it leaks ~log(2)/50 of mass to every
#: zeroed candidate, which drives b too negative, so the exact calibrator then zeroes real
#: exemplars and its held-out NLL suffers. The sharp stages remove that bias.
SOFTPLUS_BETAS: tuple[float, ...] = (50.0, 500.0, 5000.0)
#: Lower end of the threshold; strictly above -1 even after rounding to a Python float.
THRESHOLD_MIN: float = -1.0 + 1e-6
#: Temperature search range; the sigmoid-in-log-space map keeps tau strictly inside it.
TAU_MIN: float = 1e-4
TAU_MAX: float = 10.0
#: Fixed starting point of every fit (determinism): tau = 0.1, b = 0 (plain softmax).
TAU_INIT: float = 0.1
THRESHOLD_INIT: float = 0.0


@dataclass(frozen=True)
class Calibrator:
    """Temperature-plus-threshold calibrator.

    Attributes:
        temperature: Softmax temperature ``tau``; must be finite and > 0.
        threshold: Additive threshold ``b`` applied after exponentiation; must be finite
            and > -1.
    """

    temperature: float
    threshold: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be finite and > 0, got {self.temperature!r}")
        if not (math.isfinite(self.threshold) and self.threshold > -1):
            raise ValueError(f"threshold must be finite and > -1, got {self.threshold!r}")

    def influence(self, scores: np.ndarray) -> np.ndarray:
        """Exact (ReLU) influence shares for one query's candidates.

        Args:
            scores: 1-D array of candidate similarity scores (any real values).

        Returns:
            1-D float64 array of the same length, non-negative, summing to 1.

        Raises:
            ValueError: If ``scores`` is not a non-empty 1-D array of finite numbers.

        Example:
            >>> Calibrator(1.0, -0.25).influence(np.array([0.0, -np.log(2.0)])).tolist()
            [0.75, 0.25]
        """
        s = _as_scores(scores, "scores")
        # Subtracting the max first makes the result shift-invariant and overflow-free.
        w = np.maximum(np.exp((s - s.max()) / self.temperature) + self.threshold, 0.0)
        return w / w.sum()

    def to_dict(self) -> dict[str, float]:
        """Return ``{"temperature": tau, "threshold": b}`` as plain floats.

        Returns:
            A JSON-ready dict with the two parameters.
        """
        return {"temperature": float(self.temperature), "threshold": float(self.threshold)}


def candidate_sets(
    counts: RankCounts, rows: Sequence[int] | np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The calibrator's input for the queries at ``rows``: per query, the finite scores of its
    exemplars followed by its kept top distractors, and 1/0 labels marking the exemplars.

    AbC calibrates over exactly these candidates (the exemplars plus the top-K gallery), so
    the same sets serve fitting (``val``) and reporting (test cells).
    """
    scores, labels = [], []
    for i in rows:
        ex = counts.exemplar_scores[i][np.isfinite(counts.exemplar_scores[i])]
        top = counts.top_scores[i][np.isfinite(counts.top_scores[i])]
        scores.append(np.concatenate([ex, top]))
        labels.append(np.concatenate([np.ones(len(ex)), np.zeros(len(top))]))
    return scores, labels


def _as_scores(scores: np.ndarray, what: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D array, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{what} contains non-finite values (NaN or inf)")
    return s


def _validate(
    scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if len(scores) == 0:
        raise ValueError("no queries given: scores is empty")
    if len(scores) != len(labels):
        raise ValueError(f"got {len(scores)} score arrays but {len(labels)} label arrays")
    out_s, out_y = [], []
    for q, (s, y) in enumerate(zip(scores, labels, strict=True)):
        s = _as_scores(s, f"scores[{q}]")
        y = np.asarray(y)
        if y.shape != s.shape:
            raise ValueError(f"query {q}: labels shape {y.shape} != scores shape {s.shape}")
        if not np.all((y == 0) | (y == 1)):
            raise ValueError(f"query {q}: labels must be 0/1 or bool")
        y = y.astype(bool)
        if not y.any():
            raise ValueError(f"query {q} has no positive (exemplar) label")
        out_s.append(s)
        out_y.append(y)
    return out_s, out_y


def fit_calibrator(
    scores: Sequence[np.ndarray], labels: Sequence[np.ndarray], *, max_iter: int = 200
) -> Calibrator:
    """Fit ``tau`` and ``b`` by minimising the exemplar NLL with a softplus surrogate.

    Parametrisation (unconstrained ``u, v``):
    ``log tau = log TAU_MIN + (log TAU_MAX - log TAU_MIN) * sigmoid(u)`` keeps tau inside
    ``(TAU_MIN, TAU_MAX)`` without clamping (which would kill the gradient), and
    ``b = THRESHOLD_MIN + exp(v)`` keeps b in ``(-1, inf)``. Optimisation is full-batch
    L-BFGS (strong Wolfe line search) in float64 from a fixed start, once per sharpness in
    :data:`SOFTPLUS_BETAS`, so repeated fits on the same data give identical results. Data
    that favour a uniform split (e.g. every candidate an exemplar) send b towards +inf.

    Args:
        scores: One 1-D array of candidate scores per query (lengths may differ).
        labels: Same-length 0/1 or bool arrays marking each query's exemplars.
        max_iter: Maximum number of L-BFGS iterations per sharpness stage.

    Returns:
        The fitted :class:`Calibrator`.

    Raises:
        ValueError: On empty input, mismatched lengths or shapes, non-finite scores,
            non-binary labels, a query without a positive, or ``max_iter < 1``.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    s_list, y_list = _validate(scores, labels)
    import torch

    n_q, width = len(s_list), max(len(s) for s in s_list)
    # Pad to a (queries x max_candidates) matrix; padded cells get gap 0 and are masked out.
    gap = np.zeros((n_q, width))
    mask = np.zeros((n_q, width), dtype=bool)
    pos = np.zeros((n_q, width))
    for q, (s, y) in enumerate(zip(s_list, y_list, strict=True)):
        gap[q, : len(s)] = s - s.max()
        mask[q, : len(s)] = True
        pos[q, : len(s)] = y / y.sum()  # per-query mean over exemplars
    gap_t = torch.from_numpy(gap)
    mask_t = torch.from_numpy(mask)
    pos_t = torch.from_numpy(pos)
    log_lo, log_hi = math.log(TAU_MIN), math.log(TAU_MAX)

    def unpack(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tau = torch.exp(log_lo + (log_hi - log_lo) * torch.sigmoid(u))
        return tau, THRESHOLD_MIN + torch.exp(v)

    frac = (math.log(TAU_INIT) - log_lo) / (log_hi - log_lo)
    u = torch.tensor(math.log(frac / (1 - frac)), dtype=torch.float64, requires_grad=True)
    v = torch.tensor(math.log(THRESHOLD_INIT - THRESHOLD_MIN), dtype=torch.float64)
    v.requires_grad_(True)
    for beta in SOFTPLUS_BETAS:
        opt = torch.optim.LBFGS(
            [u, v],
            lr=1.0,
            max_iter=max_iter,
            tolerance_grad=1e-10,
            tolerance_change=1e-12,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure(beta: float = beta, opt: torch.optim.LBFGS = opt) -> torch.Tensor:
            opt.zero_grad()
            tau, b = unpack(u, v)
            z = beta * (torch.exp(gap_t / tau) + b)
            # log(softplus(z)): below -30 softplus(z) == exp(z) to double precision, and
            # computing it directly would underflow to log(0) for a sharp beta.
            zc = torch.clamp(z, min=-30.0)
            log_w = torch.where(z < -30.0, z, torch.log(torch.nn.functional.softplus(zc)))
            log_w = log_w - math.log(beta)
            log_norm = torch.logsumexp(log_w.masked_fill(~mask_t, -math.inf), dim=1)
            loss = (log_norm - (pos_t * log_w).sum(dim=1)).mean()
            loss.backward()
            return loss

        opt.step(closure)
    with torch.no_grad():
        tau, b = unpack(u, v)
    return Calibrator(temperature=float(tau), threshold=float(b))


def calibration_metrics(
    cal: Calibrator,
    scores: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    bins: int = 15,
) -> dict[str, Any]:
    """Evaluate a calibrator with the exact (ReLU) influence.

    Args:
        cal: The calibrator to evaluate.
        scores: One 1-D array of candidate scores per query.
        labels: Same-length 0/1 or bool exemplar labels; each query needs >= 1 exemplar.
        bins: Number of equal-width confidence bins on [0, 1] for ECE and reliability.

    Returns:
        JSON-ready dict with ``exemplar_nll`` (mean over queries of the mean over exemplars
        of ``-log(max(p_e, EPS))``), ``exemplar_mass`` (mean over queries of the influence
        summed over exemplars), ``ece`` (count-weighted ``|accuracy - confidence|`` over all
        candidates of all queries), ``reliability`` (one dict per bin with ``lower``,
        ``upper``, ``count``, ``confidence`` and ``accuracy``, the last two ``None`` for
        empty bins), ``num_queries`` and ``num_candidates``. Bins are scikit-learn's
        ``calibration_curve(strategy="uniform")``: ``(lower, upper]``, the first ``[0,
        upper]``, so a ``p`` exactly on an inner edge counts in the lower bin.

    Raises:
        ValueError: On invalid inputs (as for :func:`fit_calibrator`) or ``bins < 1``.
    """
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    bins = int(bins)
    from sklearn.calibration import calibration_curve  # lazy: sklearn is slow to import

    s_list, y_list = _validate(scores, labels)
    probs = [cal.influence(s) for s in s_list]
    nll = [float(-np.log(np.maximum(p[y], EPS)).mean()) for p, y in zip(probs, y_list, strict=True)]
    mass = [float(p[y].sum()) for p, y in zip(probs, y_list, strict=True)]

    p_all = np.concatenate(probs)
    y_all = np.concatenate(y_list).astype(np.float64)
    accuracy, confidence = calibration_curve(y_all, p_all, n_bins=bins, strategy="uniform")
    # calibration_curve returns the non-empty bins only; their counts come from its own bin
    # assignment (searchsorted on the inner edges: (lo, hi], the first bin [0, hi]).
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], p_all), minlength=bins)
    n = int(p_all.size)
    filled = iter(zip(accuracy.tolist(), confidence.tolist(), strict=True))
    ece = 0.0
    reliability = []
    for k in range(bins):
        c = int(counts[k])
        acc, conf = next(filled) if c else (None, None)
        if c:
            ece += c / n * abs(acc - conf)
        reliability.append(
            {
                "lower": k / bins,
                "upper": (k + 1) / bins,
                "count": c,
                "confidence": conf,
                "accuracy": acc,
            }
        )
    return {
        "exemplar_nll": float(np.mean(nll)),
        "exemplar_mass": float(np.mean(mass)),
        "ece": float(ece),
        "reliability": reliability,
        "num_queries": len(s_list),
        "num_candidates": n,
    }
