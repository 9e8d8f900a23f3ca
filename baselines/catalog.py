"""The baseline catalog: one name -> everything needed to rebuild a feature space exactly.

Names follow timm's ``architecture.tag`` style. Each entry is a keyword-only value: the
loader that builds it (a callable, imported on first use), the architecture, where its
weights come from (a Hugging Face Hub file or a URL, with the sha256 and revision pinned in
``weights.lock.json``), the preprocessing AbC used, the feature dim and the weights' license.
Nothing here imports torch; ``attrib-bench list baselines`` stays fast.

Tuned versions are named ``BACKBONE.tuned_BENCHMARK`` (``dino_vitb16.tuned_abc-mini``): the
backbone's features through two learned linear heads (see :mod:`baselines.tuned`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.errors import AttribBenchError
from benchmark.registry import load_target

HERE = Path(__file__).resolve().parent
LOCK_FILE = HERE / "weights.lock.json"
CALIBRATOR_DIR = HERE / "calibrators"
TUNED_SEP = ".tuned_"

#: Normalization constants, spread into :class:`Preprocess` (``Preprocess(..., **IMAGENET)``).
IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
OPENAI_CLIP = {
    "mean": (0.48145466, 0.4578275, 0.40821073),
    "std": (0.26862954, 0.26130258, 0.27577711),
}
HALF = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


@dataclass(frozen=True, kw_only=True)
class Preprocess:
    """Resize the shorter side, centre-crop, scale to [0, 1], normalize."""

    resize: int
    crop: int
    interpolation: str  # "bicubic" | "bilinear"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def describe(self) -> str:
        """One line for ``attrib-bench list baselines``.

        >>> Preprocess(resize=256, crop=224, interpolation="bicubic", **IMAGENET).describe()
        'resize 256 bicubic, crop 224, mean/std imagenet'
        """
        return f"resize {self.resize} {self.interpolation}, crop {self.crop}, mean/std {self.norm}"

    @property
    def norm(self) -> str:
        for name, value in (("imagenet", IMAGENET), ("clip", OPENAI_CLIP), ("0.5", HALF)):
            if (self.mean, self.std) == (value["mean"], value["std"]):
                return name
        return f"{self.mean}/{self.std}"

    def transform(self):
        """The torchvision transform of one PIL image to a [3, crop, crop] tensor."""
        from torchvision import transforms as T

        mode = T.InterpolationMode(self.interpolation)
        return T.Compose(
            [
                T.Resize(self.resize, interpolation=mode, antialias=True),
                T.CenterCrop(self.crop),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )


@dataclass(frozen=True, kw_only=True)
class Weights:
    """Where a checkpoint comes from; pins live in ``weights.lock.json``.

    ``filename`` is also the name looked for in a weights folder (``--weights DIR`` or
    ``$ATTRIB_BENCH_WEIGHTS``). ``fmt`` is how the file is read: ``safetensors``,
    ``torchscript`` (a TorchScript archive) or ``state_dict`` (a torch checkpoint, read with
    ``weights_only=True``).
    """

    filename: str
    fmt: str
    hub_repo: str | None = None
    url: str | None = None

    @property
    def source(self) -> str:
        return f"hf://{self.hub_repo}/{self.filename}" if self.hub_repo else str(self.url)


@dataclass(frozen=True)
class Loader:
    """A ``module:function`` that builds an entry: ``function(spec, weights_path)``.

    A callable value imported on first call, so the catalog stays torch-free. For an entry
    with weights it returns the network (random weights when the path is None); for an entry
    without weights, the feature extractor itself (see :mod:`baselines.nets`).
    """

    target: str

    @property
    def name(self) -> str:
        return self.target.rpartition(":")[2]

    def __call__(self, spec: BaselineSpec, path: Path | None) -> Any:
        return load_target(self.target)(spec, path)


TIMM = Loader("baselines.nets:timm")
MOCO_V3 = Loader("baselines.nets:moco_v3")
OPEN_CLIP = Loader("baselines.nets:open_clip")
TORCHSCRIPT = Loader("baselines.nets:torchscript")
NOWEIGHT = Loader("baselines.nets:noweight")


@dataclass(frozen=True, kw_only=True)
class BaselineSpec:
    """One catalog entry: everything that rebuilds its feature space (timm's keyword-only
    pretrained configs are the model)."""

    name: str
    loader: Loader
    arch: str  # the loader's architecture name (for noweight: the extractor class)
    dim: int
    description: str
    license: str
    preprocess: Preprocess | None = None
    weights: Weights | None = None
    in_abc: bool = False  # one of the feature spaces AbC's paper evaluated
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        """The loader's name (``timm``, ``open_clip``, ...): shown and part of the recipe."""
        return self.loader.name

    @property
    def needs_weights(self) -> bool:
        return self.weights is not None


def _hub_safetensors(repo: str) -> Weights:
    return Weights(filename="model.safetensors", fmt="safetensors", hub_repo=repo)


SPECS: tuple[BaselineSpec, ...] = (
    BaselineSpec(
        name="clip_vit_b32.openai",
        loader=OPEN_CLIP,
        arch="ViT-B-32-quickgelu",
        dim=512,
        description="OpenAI CLIP ViT-B/32 image encoder (open_clip), projected embedding",
        license="MIT",
        preprocess=Preprocess(resize=224, crop=224, interpolation="bicubic", **OPENAI_CLIP),
        weights=Weights(
            filename="ViT-B-32.pt",
            fmt="torchscript",
            url="https://openaipublic.azureedge.net/clip/models/"
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
        ),
        in_abc=True,
    ),
    BaselineSpec(
        name="dino_vitb16",
        loader=TIMM,
        arch="vit_base_patch16_224",
        dim=768,
        description="DINO ViT-B/16 (timm), CLS token after the final norm",
        license="apache-2.0",
        preprocess=Preprocess(resize=256, crop=224, interpolation="bicubic", **IMAGENET),
        weights=_hub_safetensors("timm/vit_base_patch16_224.dino"),
        in_abc=True,
    ),
    BaselineSpec(
        name="mocov3_vitb16.300ep",
        loader=MOCO_V3,
        arch="vit_base_patch16_224",
        dim=768,
        description="MoCo v3 ViT-B/16, 300 epochs: the base encoder's CLS token "
        "(projection head dropped)",
        license="CC-BY-NC-4.0",
        preprocess=Preprocess(resize=256, crop=224, interpolation="bilinear", **IMAGENET),
        weights=Weights(
            filename="vit-b-300ep.pth.tar",
            fmt="state_dict",
            url="https://dl.fbaipublicfiles.com/moco-v3/vit-b-300ep/vit-b-300ep.pth.tar",
        ),
        in_abc=True,
    ),
    BaselineSpec(
        name="vit_base_patch16_384.augreg_in21k_ft_in1k",
        loader=TIMM,
        arch="vit_base_patch16_384",
        dim=768,
        description="ViT-B/16 at 384, AugReg ImageNet-21k pretrained + 1k fine-tuned (timm), "
        "pre-logits CLS",
        license="apache-2.0",
        preprocess=Preprocess(resize=384, crop=384, interpolation="bicubic", **HALF),
        weights=_hub_safetensors("timm/vit_base_patch16_384.augreg_in21k_ft_in1k"),
        in_abc=True,
    ),
    BaselineSpec(
        name="sscd_resnet50.disc_mixup",
        loader=TORCHSCRIPT,
        arch="sscd_resnet50",
        dim=512,
        description="SSCD ResNet-50 disc_mixup copy-detection descriptor (TorchScript)",
        license="MIT",
        preprocess=Preprocess(resize=288, crop=288, interpolation="bilinear", **IMAGENET),
        weights=Weights(
            filename="sscd_disc_mixup.torchscript.pt",
            fmt="torchscript",
            url="https://dl.fbaipublicfiles.com/sscd-copy-detection/sscd_disc_mixup.torchscript.pt",
        ),
        in_abc=True,
    ),
    BaselineSpec(
        name="dinov2_vitb14.lvd142m",
        loader=TIMM,
        arch="vit_base_patch14_dinov2",
        dim=768,
        description="DINOv2 ViT-B/14 (timm) at 224 (position embeddings resampled), CLS token",
        license="apache-2.0",
        preprocess=Preprocess(resize=256, crop=224, interpolation="bicubic", **IMAGENET),
        weights=_hub_safetensors("timm/vit_base_patch14_dinov2.lvd142m"),
        kwargs={"img_size": 224},
    ),
    BaselineSpec(
        name="clip_vit_l14.laion2b_s32b_b82k",
        loader=OPEN_CLIP,
        arch="ViT-L-14",
        dim=768,
        description="open_clip ViT-L/14 trained on LAION-2B (32B samples), projected image "
        "embedding",
        license="MIT",
        preprocess=Preprocess(resize=224, crop=224, interpolation="bicubic", **HALF),
        weights=Weights(
            filename="open_clip_model.safetensors",
            fmt="safetensors",
            hub_repo="laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
        ),
    ),
    BaselineSpec(
        name="pixels",
        loader=NOWEIGHT,
        arch="baselines.noweight:Pixels",
        dim=769,
        description="16x16 area-averaged pixels, each image centred on its mean, plus a "
        "constant (no weights)",
        license="MIT",
        kwargs={"size": 16},
    ),
    BaselineSpec(
        name="color_histogram",
        loader=NOWEIGHT,
        arch="baselines.noweight:ColorHistogram",
        dim=512,
        description="joint RGB histogram, 8 bins per channel, Hellinger embedding (no weights)",
        license="MIT",
        kwargs={"bins": 8},
    ),
    BaselineSpec(
        name="random",
        loader=NOWEIGHT,
        arch="baselines.noweight:RandomFeatures",
        dim=64,
        description="a fixed random vector per image: chance level (no weights)",
        license="MIT",
        kwargs={"dim": 64, "seed": 0},
    ),
)

CATALOG: dict[str, BaselineSpec] = {s.name: s for s in SPECS}


def split_name(name: str) -> tuple[str, str | None]:
    """A baseline name -> (backbone, benchmark its heads were tuned on, or None).

    >>> split_name("dino_vitb16.tuned_abc-mini")
    ('dino_vitb16', 'abc-mini')
    >>> split_name("pixels")
    ('pixels', None)
    """
    base, sep, bench = name.partition(TUNED_SEP)
    return (base, bench) if sep else (name, None)


def get_spec(name: str) -> BaselineSpec:
    """The catalog entry of ``name`` (a tuned name gives its backbone's entry)."""
    base, _ = split_name(name)
    if base not in CATALOG:
        import difflib

        close = difflib.get_close_matches(base, CATALOG, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see `attrib-bench list baselines`"
        raise AttribBenchError(None, "baseline", f"unknown baseline {base!r}", hint)
    return CATALOG[base]


def read_lock() -> dict[str, dict[str, Any]]:
    """Pinned revision and sha256 per baseline name (``null`` where not yet pinned)."""
    return json.loads(LOCK_FILE.read_text(encoding="utf-8"))["weights"]


def pin(name: str) -> dict[str, Any]:
    """The lock entry of a weighted baseline: ``{"revision": ..., "sha256": ...}``."""
    return read_lock().get(split_name(name)[0], {"revision": None, "sha256": None})


def calibrator_path(name: str, benchmark: str, version: str, folder: Path | None = None) -> Path:
    return (folder or CALIBRATOR_DIR) / f"{name}.{benchmark}@{version}.json"


def read_calibrator(
    name: str, benchmark: str, version: str, feature_key: str
) -> dict[str, Any] | None:
    """A stored calibrator of ``name`` on ``benchmark@version``, if one was fitted on exactly
    these features (same code, weights and settings); else None (evaluate then fits one)."""
    path = calibrator_path(name, benchmark, version)
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("feature_key") != feature_key:
        return None
    return {**data["calibrator"], "source": path.name}
