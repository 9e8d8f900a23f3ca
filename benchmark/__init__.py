"""attrib-bench: the AbC data-attribution benchmark harness.

The library is import-light: importing :mod:`benchmark` loads no torch, no datasets and no
plug-ins. Entry points live in :mod:`benchmark.evaluation` and :mod:`benchmark.cli`.
"""

__version__ = "0.1.0"
