"""Benchmark the exact streamed scorer (``benchmark.scoring.score_features``).

What is measured
----------------
One set of seeded random float32 features is built: Q queries, C distractors ("candidates"),
dimension D, and one exemplar set per entry of ``--exemplars`` (default ``1/4``: a set with 1
and a set with 4 exemplars per query, timed side by side; an entry may be a mix such as
``1,4``: query i gets the i-th count cyclically). The sets share queries and distractors.
Exemplars are noisy copies of their query with cosine similarity drawn uniformly in
[0, 0.25], so their ranks range from the middle of the distractors to the top. Every row
is L2-normalized, the distractors by ``scoring.UnitGallery.normalize`` (in place, before
anything is timed; its time is printed), so all engines do the same arithmetic on the same
rows. The distractors are one [C, D] tensor; ``chunks(size)`` yields slices of it (views).

The engines below are timed in the same process, ``--repeats`` times (default 3), the
repeats interleaved, after a small warm-up. Ratios are taken within each repeat and the
median is reported, so load from other processes shifts both sides of a ratio:

* ``ours``: ``score_features(...)`` once per exemplar set, with top_n=100: exact
  per-exemplar rank counts (above / tied) plus a running top-100 of distractors per query.
  The gallery is given as the ``UnitGallery`` (normalized once, up front), as the harness
  scores extracted features; ``ours, normalizing each chunk`` (first exemplar set) gives it
  plain chunks instead, which the scorer normalizes as it streams them, as it does for
  memory-mapped feature files.
* ``bare GEMM``: only the Q x C score matrix, computed tile by tile with ``torch.mm(...,
  out=buffer)`` and thrown away; the lower bound for any exact method. Two tilings are
  timed: the scorer's own tiles (QUERY_BLOCK x DISTRACTOR_CHUNK) and one big chunk per query
  block (QUERY_BLOCK x C); the faster one is the baseline.
* ``faiss``: ``IndexFlatIP.search(queries, 100)`` (exact top-100 only, no rank counts;
  ``index.add`` is timed separately and not included), with as many OpenMP threads as torch.

Peak memory of each engine is measured in a fresh subprocess (this script re-run with a
hidden flag): it builds the same features without transient copies, reads its resident
size, runs the engine once and reads its peak resident size (Linux VmHWM, reset just before
the engine; ``getrusage(RUSAGE_SELF).ru_maxrss`` where /proc is missing; ru_maxrss is not
used on Linux because a child inherits its parent's peak across fork + exec). The increase
is the engine's own working memory; the absolute peak is what the whole process needed,
including ~0.5 GiB for the Python + torch runtime itself.

How to read the ratios
----------------------
* ``speed vs bare GEMM`` = bare_gemm_seconds / engine_seconds. 1.0 means the engine costs
  no more than the matrix multiply it cannot avoid; the goal for ``ours`` is >= 0.9, i.e.
  counting and top-N add at most ~11% on top of the GEMM.
* ``ours vs faiss`` = faiss_seconds / ours_seconds; > 1 means ours (which does strictly
  more: exact counts for every exemplar plus top-100) is faster than faiss' exact top-100.
* memory: ``ours`` absolute peak RSS should stay <= candidate features size + 1 GiB.

A correctness spot check compares ours' counts and top-100 for a handful of queries with a
float64 full-row computation. Counts may differ only by distractors whose score is within
1e-5 of the exemplar's (float32 rounding of differently shaped GEMMs); anything else fails.

Examples::

    python benchmarks/bench_scoring.py --quick
    python benchmarks/bench_scoring.py --quick --exemplars 4
    python benchmarks/bench_scoring.py --queries 3000 --candidates 100000 --no-faiss
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmark import scoring  # pip install -e . first

SIZES: dict[str, tuple[int, int, int]] = {
    "quick": (1_000, 50_000, 512),
    "medium": (2_000, 200_000, 512),
    "full": (10_000, 1_000_000, 512),
}
TOP_N = 100
TOL = 1e-5
GIB = 1 << 30
ENGINES = ("ours", "ours_chunked", "gemm_tiled", "gemm_big", "faiss")
LABELS = {
    "ours": "ours (score_features)",
    "ours_chunked": "ours (score_features)",
    "gemm_tiled": "bare GEMM, scorer tiles",
    "gemm_big": "bare GEMM, 1 chunk/block",
    "faiss": "faiss IndexFlatIP top-100",
}


# ----------------------------------------------------------------------------- features


@dataclass
class Features:
    queries: torch.Tensor  # [Q, D] float32, unit rows
    exemplars: torch.Tensor  # [X, D] float32, unit rows
    exemplar_index: list[list[int]]  # per query, rows of ``exemplars``
    distractors: torch.Tensor  # [C, D] float32, unit rows (scoring.normalize output)
    query_ids: list[str]
    exemplar_ids: list[tuple[str, ...]]

    @property
    def gallery(self) -> scoring.UnitGallery:
        """The distractors as the scorer's already-normalized gallery (no copy)."""
        return scoring.UnitGallery(self.distractors)

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """``distractor_chunks`` for the scorer: consecutive views, no copies."""
        for start in range(0, len(self.distractors), size):
            yield self.distractors[start : start + size]

    def head(self, n_queries: int, n_distractors: int) -> Features:
        """A small view of the same features (for warm-up)."""
        return Features(
            self.queries[:n_queries],
            self.exemplars,
            self.exemplar_index[:n_queries],
            self.distractors[:n_distractors],
            self.query_ids[:n_queries],
            self.exemplar_ids[:n_queries],
        )


def _unit_rows(n: int, d: int, gen: torch.Generator, block: int = 4096) -> torch.Tensor:
    """[n, d] random unit rows, filled block by block in place (no full-size temporaries)."""
    out = torch.empty(n, d, dtype=torch.float32)
    for start in range(0, n, block):
        part = out[start : start + block]
        part.normal_(generator=gen)
        part.div_(part.norm(dim=1, keepdim=True))
    return out


def make_features(
    n_queries: int, n_candidates: int, dim: int, counts: list[int], seed: int
) -> Features:
    gen = torch.Generator().manual_seed(seed)
    queries = _unit_rows(n_queries, dim, gen)
    distractors = scoring.UnitGallery.normalize(_unit_rows(n_candidates, dim, gen)).rows
    return with_exemplars(queries, distractors, counts, seed)


def with_exemplars(
    queries: torch.Tensor, distractors: torch.Tensor, counts: list[int], seed: int
) -> Features:
    """Features with exemplar set ``counts`` for the given queries and distractors; every
    set shares the queries and distractors (exemplars have their own seeded generator)."""
    n_queries, dim = queries.shape
    gen = torch.Generator().manual_seed(seed + 1_000_003 * sum(counts) + len(counts))
    per_query = [counts[i % len(counts)] for i in range(n_queries)]
    owner = torch.repeat_interleave(torch.arange(n_queries), torch.tensor(per_query))
    # Exemplar = normalize(a * query + noise) with cos(query, exemplar) ~ U[0, 0.25].
    cos = torch.rand(len(owner), generator=gen) * 0.25
    a = (cos / (1 - cos * cos).sqrt())[:, None]
    exemplars = _unit_rows(len(owner), dim, gen).add_(a * queries[owner])
    exemplars.div_(exemplars.norm(dim=1, keepdim=True))
    index, ids, start = [], [], 0
    for i, e in enumerate(per_query):
        index.append(list(range(start, start + e)))
        ids.append(tuple(f"x{i}_{j}" for j in range(e)))
        start += e
    return Features(
        queries, exemplars, index, distractors, [f"q{i}" for i in range(n_queries)], ids
    )


# ------------------------------------------------------------------------------ engines


def run_ours(f: Features, chunked: bool = False) -> scoring.RankCounts:
    return scoring.score_features(
        f.queries,
        f.exemplars,
        f.exemplar_index,
        f.chunks if chunked else f.gallery,
        query_ids=f.query_ids,
        exemplar_ids=f.exemplar_ids,
        top_n=TOP_N,
    )


def run_ours_chunked(f: Features) -> scoring.RankCounts:
    return run_ours(f, chunked=True)


def _gemm(f: Features, chunk: int) -> None:
    """All Q x C scores, tile by tile (same loop order as the scorer), discarded."""
    buffers: dict[int, torch.Tensor] = {}  # by column count; a row slice stays contiguous
    q = f.queries
    with torch.inference_mode():
        for d in f.chunks(chunk):
            d_t = d.T  # transposed view: BLAS reads it as is
            buf = buffers.get(len(d))
            if buf is None:
                buf = buffers[len(d)] = torch.empty(min(len(q), scoring.QUERY_BLOCK), len(d))
            for start in range(0, len(q), scoring.QUERY_BLOCK):
                block = q[start : start + scoring.QUERY_BLOCK]
                torch.mm(block, d_t, out=buf[: len(block)])


def run_gemm_tiled(f: Features) -> None:
    _gemm(f, scoring.DISTRACTOR_CHUNK)


def run_gemm_big(f: Features) -> None:
    _gemm(f, max(len(f.distractors), 1))


class FaissRunner:
    """Index built once (``add`` timed on its own), then ``search`` timed."""

    def __init__(self, f: Features):
        import faiss

        faiss.omp_set_num_threads(torch.get_num_threads())
        t0 = time.perf_counter()
        self.index = faiss.IndexFlatIP(f.distractors.shape[1])
        self.index.add(f.distractors.numpy())
        self.add_seconds = time.perf_counter() - t0
        self.queries = f.queries.numpy()

    def __call__(self, f: Features) -> tuple[np.ndarray, np.ndarray]:
        queries = self.queries if len(f.queries) == len(self.queries) else f.queries.numpy()
        return self.index.search(queries, TOP_N)


def time_best(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


# ------------------------------------------------------------------------------- memory


def _proc_status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset this process' peak-RSS mark (Linux clear_refs '5'); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_bytes() -> int:
    """Peak RSS of this process image: VmHWM, else ``getrusage(RUSAGE_SELF).ru_maxrss``.

    ru_maxrss alone is not enough in a child: Linux carries the parent's RSS into it across
    fork/vfork + exec, so a child of a big parent starts with the parent's peak. VmHWM belongs
    to the exec'd image only (and can be reset right before the engine runs).
    """
    hwm = _proc_status_bytes("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(args: argparse.Namespace) -> None:
    """Hidden entry point: build features, run one engine once, print RSS as JSON.

    ``before`` is the resident size with features built (and faiss imported); ``after`` the
    peak resident size while the engine ran (its index build included, for faiss).
    """
    engine = args.child
    f = make_features(args.queries, args.candidates, args.dim, args.counts, args.seed)
    runner: Callable[[Features], object]
    if engine == "faiss":
        import faiss  # noqa: F401  (import cost belongs to the baseline, not the engine)
    gc.collect()
    reset = _reset_peak()
    before = _proc_status_bytes("VmRSS") if reset else _peak_bytes()
    t0 = time.perf_counter()
    if engine == "faiss":
        runner = FaissRunner(f)
    else:
        runner = {
            "ours": run_ours,
            "ours_chunked": run_ours_chunked,
            "gemm_tiled": run_gemm_tiled,
            "gemm_big": run_gemm_big,
        }[engine]
    runner(f)
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {"before": before, "after": _peak_bytes(), "seconds": seconds, "peak_reset": reset}
        )
    )


def measure_memory(engine: str, args: argparse.Namespace) -> dict[str, float] | None:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        engine,
        "--queries",
        str(args.queries),
        "--candidates",
        str(args.candidates),
        "--dim",
        str(args.dim),
        "--exemplars",
        args.exemplars,
        "--seed",
        str(args.seed),
        "--threads",
        str(torch.get_num_threads()),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"  memory child for {engine} failed:\n{proc.stderr}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.splitlines()[-1])


# -------------------------------------------------------------------------- spot check


def spot_check(
    f: Features,
    res: scoring.RankCounts,
    faiss_result: tuple[np.ndarray, np.ndarray] | None,
    n_check: int,
) -> None:
    """Compare ours with a float64 full-row computation for a few queries; raise on error."""
    q_count = len(f.queries)
    sel = sorted(
        {
            *range(min(q_count, 4)),
            *np.linspace(0, q_count - 1, n_check).round().astype(int).tolist(),
        }
    )
    qs = f.queries[sel].double()
    rows = torch.cat([c.double() @ qs.T for c in f.chunks(65_536)]).T.numpy()  # [k, C]
    exact_counts = tolerated = 0
    for k, i in enumerate(sel):
        s = rows[k]
        ex = f.exemplars[f.exemplar_index[i]].double() @ qs[k]
        for j, t in enumerate(ex.tolist()):
            got_t = res.exemplar_scores[i, j]
            if abs(got_t - t) > TOL:
                raise AssertionError(f"query {i} exemplar {j}: score {got_t} vs {t}")
            above, ties = int(res.above[i, j]), int(res.ties[i, j])
            diff = s - t
            a_lo, a_hi = int((diff > TOL).sum()), int((diff > -TOL).sum())
            if not (
                a_lo <= above <= a_hi
                and a_lo <= above + ties <= a_hi
                and ties <= int((np.abs(diff) <= TOL).sum())
            ):
                raise AssertionError(
                    f"query {i} exemplar {j}: above={above} ties={ties}, "
                    f"float64 row allows above in [{a_lo}, {a_hi}]"
                )
            if above == int((diff > 0).sum()) and ties == int((diff == 0).sum()):
                exact_counts += 1
            else:
                tolerated += 1
        want = np.sort(s)[::-1][:TOP_N]
        got_s, got_i = res.top_scores[i][: len(want)], res.top_index[i][: len(want)]
        if not (np.abs(got_s - want).max() <= TOL and np.abs(s[got_i] - got_s).max() <= TOL):
            raise AssertionError(f"query {i}: top-{TOP_N} differs from the float64 row")
        if faiss_result is not None and np.abs(faiss_result[0][i][: len(want)] - want).max() > TOL:
            raise AssertionError(f"query {i}: faiss top-{TOP_N} differs from the float64 row")
    print(
        f"spot check ok: {len(sel)} queries, {exact_counts + tolerated} exemplars "
        f"({exact_counts} identical to float64, {tolerated} within |score diff| < {TOL:g}); "
        f"top-{TOP_N} within {TOL:g}" + (" (ours and faiss)" if faiss_result else "")
    )


# ---------------------------------------------------------------------------------- main


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _gib(n: float) -> str:
    """Bytes as 'x.xx GiB', or 'x MiB' below 1 GiB."""
    return f"{n / GIB:.2f} GiB" if abs(n) >= GIB else f"{n / (1 << 20):.0f} MiB"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Sizes (queries x candidates x dim): --quick 1000 x 50k x 512; default "
        "(medium) 2000 x 200k x 512; --full 10k x 1M x 512, which takes tens of minutes "
        "on a 2-core CPU (every engine runs twice: timing and memory) and needs ~8 GiB "
        "of RAM. See the module docstring for how to read the ratios.",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="1000 x 50k x 512 (seconds)")
    size.add_argument(
        "--full", action="store_true", help="10k x 1M x 512 (tens of minutes on a 2-core CPU)"
    )
    p.add_argument("--queries", type=int, help="override the number of queries")
    p.add_argument("--candidates", type=int, help="override the number of distractors")
    p.add_argument("--dim", type=int, help="override the feature dimension")
    p.add_argument(
        "--exemplars",
        default="1/4",
        help="exemplar sets timed side by side, separated by '/': each one count ('4') or a "
        "cyclic mix ('1,4'); default '1/4' (1 and 4 exemplars per query)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        help="interleaved timed runs of every engine (default 3); ratios are per run, "
        "the median is reported",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch/faiss threads (default: torch's)")
    p.add_argument("--no-faiss", action="store_true", help="skip faiss")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument(
        "--check-queries",
        type=int,
        default=8,
        help="queries in the correctness spot check (0 skips it)",
    )
    p.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    name = "quick" if args.quick else "full" if args.full else "medium"
    q, c, d = SIZES[name]
    args.size = name
    args.queries = args.queries or q
    args.candidates = args.candidates or c
    args.dim = args.dim or d
    try:
        args.sets = [[int(x) for x in part.split(",")] for part in args.exemplars.split("/")]
    except ValueError:
        p.error("--exemplars: counts are integers, e.g. '1/4' or '1,4'")
    if any(not c or min(c) < 1 for c in args.sets):
        p.error("--exemplars needs counts >= 1")
    args.counts = args.sets[0]  # the memory subprocess measures the first set
    if args.repeats is None:
        args.repeats = 3
    return args


def _label(name: str) -> str:
    if name.startswith("ours@"):
        return f"ours, {name[5:]} exemplar(s)/query"
    if name.startswith("ours_chunked@"):
        return f"ours, {name[13:]} ex., normalizes chunks"
    return LABELS[name]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        memory_child(args)
        return

    q_count, c_count, dim = args.queries, args.candidates, args.dim
    pairs = q_count * c_count
    cand_bytes = c_count * dim * 4
    print(
        f"bench_scoring: {q_count} queries x {c_count} candidates x dim {dim}, exemplar sets "
        f"{args.exemplars}, top-{TOP_N}, tiles {scoring.QUERY_BLOCK} x "
        f"{scoring.DISTRACTOR_CHUNK}, {torch.get_num_threads()} threads, "
        f"repeats {args.repeats}, torch {torch.__version__}"
    )
    log("building features ...")
    base = make_features(q_count, c_count, dim, args.sets[0], args.seed)
    copy = base.distractors.clone()
    t0 = time.perf_counter()
    scoring.UnitGallery.normalize(copy)  # in place, as evaluate does once per run
    normalize_seconds = time.perf_counter() - t0
    del copy
    sets = {
        ",".join(map(str, c)): base
        if i == 0
        else with_exemplars(base.queries, base.distractors, c, args.seed)
        for i, c in enumerate(args.sets)
    }
    f_exemplars = max(len(f.exemplars) for f in sets.values())

    engines: dict[str, Callable[[Features], object]] = {}
    data: dict[str, Features] = {}
    for label, feats in sets.items():
        engines[f"ours@{label}"] = run_ours
        data[f"ours@{label}"] = feats
    first = args.exemplars.split("/")[0]
    engines[f"ours_chunked@{first}"] = run_ours_chunked
    data[f"ours_chunked@{first}"] = base
    engines["gemm_tiled"] = run_gemm_tiled
    engines["gemm_big"] = run_gemm_big
    faiss_add = None
    if not args.no_faiss:
        log("faiss: adding distractors ...")
        runner = FaissRunner(base)
        faiss_add = runner.add_seconds
        engines["faiss"] = runner

    for name, fn in engines.items():
        feats = data.get(name, base)
        fn(
            feats.head(
                min(q_count, scoring.QUERY_BLOCK), min(c_count, 2 * scoring.DISTRACTOR_CHUNK)
            )
        )
    # Repeats are interleaved (ours, GEMM, GEMM, faiss, ours, ...): a ratio is taken within
    # one repeat, so a slow phase of a shared machine shifts both sides of it; the median
    # ratio over repeats is reported (and the best time of each engine).
    runs: list[dict[str, float]] = []
    results: dict[str, object] = {}
    for rep in range(args.repeats):
        runs.append({})
        for name, fn in engines.items():
            log(f"timing {_label(name)} (repeat {rep + 1}/{args.repeats}) ...")
            feats = data.get(name, base)
            sec, results[name] = time_best(lambda fn=fn, f=feats: fn(f), 1)
            runs[-1][name] = sec
            log(f"  {sec:.3f} s")
    seconds = {name: min(r[name] for r in runs) for name in engines}

    if args.check_queries > 0:
        for name, feats in data.items():
            spot_check(feats, results[name], results.get("faiss"), args.check_queries)

    memory: dict[str, dict[str, float] | None] = {}
    if not args.no_memory:
        del base, sets, data, results, engines
        gc.collect()
        for name in seconds:
            if name.startswith("ours@") and name != f"ours@{args.exemplars.split('/')[0]}":
                continue  # one memory run of ours (the first exemplar set)
            log(f"memory of {_label(name)} (subprocess) ...")
            memory[name] = measure_memory(name.split("@")[0], args)

    def gemm_of(r: dict[str, float]) -> float:
        return min(r["gemm_tiled"], r["gemm_big"])

    gemm = min(seconds["gemm_tiled"], seconds["gemm_big"])
    gemm_name = "gemm_tiled" if seconds["gemm_tiled"] <= seconds["gemm_big"] else "gemm_big"
    print()
    header = (
        f"{'engine (best time)':<33}{'seconds':>9}{'Mpairs/s':>10}{'GFLOP/s':>9}"
        f"{'vs bare GEMM':>14}{'peak RSS +':>13}{'peak RSS':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, sec in seconds.items():
        mem = memory.get(name)
        mem_cols = (
            f"{_gib(mem['after'] - mem['before']):>13}{_gib(mem['after']):>12}"
            if mem
            else f"{'-':>13}{'-':>12}"
        )
        mark = "*" if name == gemm_name else " "
        print(
            f"{_label(name):<32}{mark}{sec:9.3f}{pairs / sec / 1e6:10.1f}"
            f"{2 * pairs * dim / sec / 1e9:9.1f}{gemm / sec:14.2f}{mem_cols}"
        )
    print("-" * len(header))
    print(
        "* bare GEMM baseline = the faster of the two tilings; 'vs bare GEMM' = "
        "baseline seconds / engine seconds"
    )
    if memory:
        print(
            "  peak RSS + = engine's peak resident memory over the process with features "
            "built (fresh subprocess); peak RSS = whole process, Python + torch runtime included"
        )
    print(
        f"  UnitGallery.normalize of the distractors, once per evaluation (not included "
        f"above, like faiss' add): {normalize_seconds:.3f} s"
    )
    if faiss_add is not None:
        print(f"  faiss index.add (not included above): {faiss_add:.3f} s")
    print(
        f"candidate features size: {_gib(cand_bytes)} "
        f"({c_count} x {dim} float32); queries+exemplars "
        f"{_gib((q_count + f_exemplars) * dim * 4)}"
    )
    print()
    print(f"ratios within each repeat (median of {len(runs)}; per repeat in brackets):")
    for name in seconds:
        if not name.startswith("ours"):
            continue
        vs_gemm = [gemm_of(r) / r[name] for r in runs]
        med = float(np.median(vs_gemm))
        print(
            f"  {_label(name)}: bare GEMM / ours = {med:.2f} "
            f"[{', '.join(f'{v:.2f}' for v in vs_gemm)}]  "
            f"goal >= 0.90: {'met' if med >= 0.9 else 'NOT met'}"
        )
        if "faiss" in seconds:
            vs_faiss = [r["faiss"] / r[name] for r in runs]
            med = float(np.median(vs_faiss))
            print(
                f"  {_label(name)}: faiss / ours     = {med:.2f} "
                f"[{', '.join(f'{v:.2f}' for v in vs_faiss)}]  "
                f"{'ours faster' if med > 1 else 'faiss faster'}"
            )
    if "faiss" in seconds:
        vs_gemm = [gemm_of(r) / r["faiss"] for r in runs]
        print(f"  faiss: bare GEMM / faiss = {float(np.median(vs_gemm)):.2f}")
    mem = next((v for k, v in memory.items() if k.startswith("ours@")), None)
    if mem:
        limit = cand_bytes + GIB
        print(
            f"ours peak RSS: {_gib(mem['after'])} total, "
            f"+{_gib(mem['after'] - mem['before'])} over features; limit "
            f"candidate features + 1 GiB = {_gib(limit)} "
            f"[{'met' if mem['after'] <= limit else 'NOT met'}]"
        )


if __name__ == "__main__":
    main()
