"""AbC's released tuned weights as baselines: ``BACKBONE.tuned_abc``.

The official ``weights/mapper/<m>_tuned.pth`` holds ``{'real_mapper', 'synth_mapper'}``, the
state dicts of two ``nn.Linear(D, D)``; AbC applies them to the backbone's raw features and
L2-normalizes the result (:class:`RawHeads`; our own heads normalize their input first, so
the two are kept apart). ``weights/calibrator/<m>_tuned.pth`` (clip and dino only) holds
``{'inv_tau', 'bias'}``; AbC's calibrator is

    p_i = ReLU(exp(inv_tau * (s_i - max s)) + 0.001 * bias) / sum_k (...)

with the gain 0.001 fixed in code, not saved. Ours (:mod:`benchmark.calibration`) is
``ReLU(exp((s_i - max s) / tau) + b)`` normalized, so ``tau = 1 / inv_tau`` and
``b = 0.001 * bias`` give identical probabilities.

The files are found like other weights: in ``--weights FOLDER`` or ``$ATTRIB_BENCH_WEIGHTS``
(as ``mapper/<m>_tuned.pth`` or ``weights/mapper/<m>_tuned.pth``), else in
``<cache>/weights/abc/``. Nothing is downloaded: the release is an archive
(``weights.tar.gz``), see docs/real-abc.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from baselines.catalog import split_name
from baselines.heads import Heads, HeadsFile
from benchmark.calibration import Calibrator
from benchmark.errors import AttribBenchError
from benchmark.fileio import sha256_file, sha256_text
from benchmark.paths import cache_root

OFFICIAL = "abc"
#: The benchmark name and version ``splits import-abc`` gives the official test set; the
#: official calibrator is used on that benchmark only.
OFFICIAL_VERSION = "1.0.0"
BIAS_GAIN = 0.001
#: Catalog backbone -> the official model name in file names.
MODEL_NAMES: dict[str, str] = {
    "clip_vit_b32.openai": "clip",
    "dino_vitb16": "dino",
    "mocov3_vitb16.300ep": "moco",
    "vit_base_patch16_384.augreg_in21k_ft_in1k": "vit",
    "sscd_resnet50.disc_mixup": "sscd",
}


class RawHeads(Heads):
    """AbC's heads: the linear map sees the backbone's raw features, then L2 normalization."""

    def forward(self, features: torch.Tensor, role: str) -> torch.Tensor:
        head = self.synth if role == "synth" else self.real
        return F.normalize(head(features.float()), dim=1)


def abc_calibrator(inv_tau: float, bias: float) -> Calibrator:
    """Our calibrator giving AbC's probabilities for its saved ``inv_tau`` and ``bias``."""
    return Calibrator(1.0 / float(inv_tau), BIAS_GAIN * float(bias))


def search_dirs(weights: str | Path | None) -> list[Path]:
    roots = []
    if weights is not None and Path(weights).is_dir():
        roots.append(Path(weights))
    if os.environ.get("ATTRIB_BENCH_WEIGHTS"):
        roots.append(Path(os.environ["ATTRIB_BENCH_WEIGHTS"]))
    roots.append(cache_root() / "weights" / OFFICIAL)
    return [d for r in roots for d in (r, r / "weights")]


def find_official(kind: str, model: str, weights: str | Path | None) -> Path | None:
    """``<dir>/<kind>/<model>_tuned.pth`` in the first search folder that has it."""
    for d in search_dirs(weights):
        path = d / kind / f"{model}_tuned.pth"
        if path.is_file():
            return path
    return None


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise AttribBenchError(
            path,
            None,
            f"refused: not loadable with torch.load(weights_only=True) ({first})",
            "use the official weights file; other pickles are never loaded",
        ) from None


def _linear(state: Any, path: Path, field: str) -> tuple[torch.Tensor, torch.Tensor]:
    ok = isinstance(state, dict) and {"weight", "bias"} <= state.keys()
    w, b = (state["weight"], state["bias"]) if ok else (None, None)
    if not (
        isinstance(w, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and w.ndim == 2
        and w.shape[0] == w.shape[1]
        and b.shape == (w.shape[0],)
    ):
        raise AttribBenchError(
            path, field, "expected an nn.Linear(D, D) state dict", "re-download weights.tar.gz"
        )
    return w.float(), b.float()


def read_mapper(path: Path) -> RawHeads:
    data = _load(path)
    if not isinstance(data, dict) or not {"real_mapper", "synth_mapper"} <= data.keys():
        raise AttribBenchError(
            path, None, "expected {'real_mapper', 'synth_mapper'}", "re-download weights.tar.gz"
        )
    rw, rb = _linear(data["real_mapper"], path, "real_mapper")
    sw, sb = _linear(data["synth_mapper"], path, "synth_mapper")
    if rw.shape != sw.shape:
        raise AttribBenchError(path, None, "the two mappers differ in dim", "re-download it")
    heads = RawHeads(rw.shape[0])
    heads.load_state_dict(
        {"real.weight": rw, "real.bias": rb, "synth.weight": sw, "synth.bias": sb}
    )
    return heads.eval().requires_grad_(False)


def read_calibrator(path: Path) -> Calibrator:
    data = _load(path)
    ok = isinstance(data, dict) and {"inv_tau", "bias"} <= data.keys()
    try:
        cal = abc_calibrator(float(data["inv_tau"]), float(data["bias"])) if ok else None
    except (TypeError, ValueError, ZeroDivisionError):
        cal = None
    if cal is None:
        raise AttribBenchError(
            path,
            None,
            "expected {'inv_tau', 'bias'} scalars with inv_tau > 0",
            "re-download weights.tar.gz",
        )
    return cal


def official_heads(name: str, weights: str | Path | None = None) -> HeadsFile:
    """The heads (and calibrator, when released) of ``BACKBONE.tuned_abc``."""
    base, _ = split_name(name)
    model = MODEL_NAMES.get(base)
    if model is None:
        raise AttribBenchError(
            None,
            name,
            "AbC released tuned weights only for " + ", ".join(MODEL_NAMES),
            "use one of those backbones, or train heads with train-tuned",
        )
    path = find_official("mapper", model, weights)
    if path is None:
        where = ", ".join(str(d) for d in search_dirs(weights))
        raise AttribBenchError(
            None,
            name,
            f"weights/mapper/{model}_tuned.pth not found (looked in {where})",
            "extract the official weights.tar.gz and pass --weights FOLDER "
            "or set ATTRIB_BENCH_WEIGHTS=FOLDER (see docs/real-abc.md)",
        )
    heads = read_mapper(path)
    record: dict[str, Any] = {"official": True, "name": name, "source": f"AbC {path.name}"}
    sha = sha256_file(path)
    cal_path = find_official("calibrator", model, weights)
    if cal_path is not None:
        record.update(
            benchmark=OFFICIAL,
            version=OFFICIAL_VERSION,
            calibrator=read_calibrator(cal_path).to_dict(),
        )
        sha = sha256_text(f"{sha}:{sha256_file(cal_path)}")
    return HeadsFile(path, heads, record, sha)
