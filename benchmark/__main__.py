"""``python -m benchmark ...``: the same command line as ``attrib-bench``."""

from benchmark.cli import main

if __name__ == "__main__":
    main()
