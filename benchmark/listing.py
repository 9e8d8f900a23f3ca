"""What ``attrib-bench list`` prints: the registered benchmarks, baselines, test cases and
measures, as text lines (the CLI only echoes them).

Heavy registries (the baseline catalog) are imported only when asked for, so listing
benchmarks stays fast and torch-free.
"""

from __future__ import annotations

from benchmark.format import table

#: What can be listed, in the order ``attrib-bench list --help`` shows.
WHAT = ("benchmarks", "baselines", "test-cases", "measures")


def baseline_lines() -> list[str]:
    """A table of the baseline catalog (dimension, preprocessing, weights and whether they
    are pinned, license, whether AbC's paper used it), then the trained tuned heads."""
    from baselines.catalog import SPECS, pin
    from baselines.tuned import available_tuned

    rows = [["name", "dim", "preprocessing", "weights", "pinned", "license", "AbC"]]
    for spec in SPECS:
        lock = pin(spec.name)
        pinned = "-" if spec.weights is None else "sha256" if lock.get("sha256") else "no"
        if lock.get("revision"):
            pinned += "+revision"
        rows.append(
            [
                spec.name,
                str(spec.dim),
                spec.preprocess.describe() if spec.preprocess else "-",
                spec.weights.source if spec.weights else "none",
                pinned,
                spec.license,
                "yes" if spec.in_abc else "",
            ]
        )
    rows += [[name, "", "tuned heads", str(path), "", "", ""] for name, path in available_tuned()]
    return table(rows)


def benchmark_lines() -> list[str]:
    """``name<TAB>description`` per registered benchmark; the default one is marked."""
    from benchmark.benchmarks import BENCHMARKS, DEFAULT_BENCHMARK

    return [
        f"{e.name}{' (default)' if e.name == DEFAULT_BENCHMARK else ''}\t{e.description}"
        for e in BENCHMARKS.entries()
    ]


def part_lines() -> list[str]:
    """``part<TAB>test|tuning<TAB>aliases`` per part of a benchmark."""
    from benchmark.types import PART_ALIASES, Part

    lines = []
    for p in Part:
        aliases = sorted(a for a, t in PART_ALIASES.items() if t is p)
        lines.append(f"{p.value}\t{'test' if p.is_test else 'tuning'}\t{', '.join(aliases)}")
    return lines


def measure_lines() -> list[str]:
    """``name<TAB>higher|lower is better`` per measure of the registry."""
    from benchmark.metrics import MEASURES

    return [f"{m.name}\t{'higher' if m.higher_is_better else 'lower'} is better" for m in MEASURES]


def listing(what: str) -> list[str]:
    """The lines of ``attrib-bench list WHAT`` (one of :data:`WHAT`)."""
    return {
        "benchmarks": benchmark_lines,
        "baselines": baseline_lines,
        "test-cases": part_lines,
        "measures": measure_lines,
    }[what]()
