"""Frozen benchmark data and the code that generates it (see ``splits.generate``)."""
