"""The baseline catalog: real architectures, AbC's preprocessing, weights in upstream formats.

No weights are downloaded: every entry is built with random weights, and each weights format
(Hub cache layout, local safetensors, a MoCo v3 training checkpoint, TorchScript archives) is
tested by saving random weights in that format and loading them through the code path real
weights take, then comparing features with the model the weights came from.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from baselines import catalog, weights
from baselines.backbone import Baseline, build_backbone
from baselines.catalog import CATALOG, SPECS, BaselineSpec, Loader, get_spec
from baselines.nets import SSCDNet
from benchmark.cli import main
from benchmark.errors import AttribBenchError
from benchmark.registry import load_target

WEIGHTED = [s.name for s in SPECS if s.weights is not None]
IMAGE = Image.new("RGB", (300, 200), (120, 30, 200))


def images(n: int = 2) -> list[Image.Image]:
    g = torch.Generator().manual_seed(0)
    return [
        Image.fromarray((torch.rand(180, 260, 3, generator=g) * 255).byte().numpy())
        for _ in range(n)
    ]


def features(extractor, ims) -> torch.Tensor:
    with torch.inference_mode():
        return extractor.embed(torch.stack([extractor.preprocess(im) for im in ims]))


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    """No weights anywhere: an empty Hub cache, no weights folder, an empty download cache."""
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(weights.ENV_DIR, raising=False)
    monkeypatch.setenv("ATTRIB_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def set_pin(monkeypatch, name: str, sha256: str | None) -> None:
    lock = catalog.read_lock()
    lock[name] = {"revision": None, "sha256": sha256}
    monkeypatch.setattr(catalog, "read_lock", lambda: lock)


# --------------------------------------------------------------------------------------------
# the catalog itself


def test_catalog_holds_abc_feature_spaces_with_their_preprocessing():
    """Upstream's five spaces, with the preprocessing ABC_FACTS section 5 lists."""
    expected = {
        "clip_vit_b32.openai": (224, 224, "clip", 512),
        "dino_vitb16": (256, 224, "imagenet", 768),
        "mocov3_vitb16.300ep": (256, 224, "imagenet", 768),
        "vit_base_patch16_384.augreg_in21k_ft_in1k": (384, 384, "0.5", 768),
        "sscd_resnet50.disc_mixup": (288, 288, "imagenet", 512),
    }
    for name, (resize, crop, norm, dim) in expected.items():
        s = CATALOG[name]
        assert s.in_abc
        assert (s.preprocess.resize, s.preprocess.crop, s.preprocess.norm, s.dim) == (
            resize,
            crop,
            norm,
            dim,
        )
    assert CATALOG["dino_vitb16"].preprocess.interpolation == "bicubic"
    assert CATALOG["mocov3_vitb16.300ep"].preprocess.interpolation == "bilinear"
    modern = [s for s in SPECS if s.weights is not None and not s.in_abc]
    assert len(modern) >= 2
    assert set(catalog.read_lock()) == set(WEIGHTED)  # every weighted entry has a lock line


def test_entries_are_keyword_only_values_with_a_loader():
    """timm's pretrained-config style: no positional fields, and each entry names the callable
    that builds it (no dispatch on a family string)."""
    spec = CATALOG["pixels"]
    with pytest.raises(TypeError):
        BaselineSpec("x", spec.loader, "arch", 8, "d", "MIT")  # type: ignore[misc]
    for s in SPECS:
        assert isinstance(s.loader, Loader) and s.family == s.loader.name
        assert callable(load_target(s.loader.target)), s.name
        assert (s.family == "noweight") == (not s.needs_weights)
        assert (s.preprocess is None) == (not s.needs_weights)


def test_noweight_loader_builds_the_extractor_and_refuses_networks():
    extractor = CATALOG["color_histogram"].loader(CATALOG["color_histogram"], None)
    assert extractor.spec == {"name": "color_histogram", "bins": 8}
    with pytest.raises(ValueError, match="without weights has no network"):
        build_backbone(CATALOG["pixels"], None)


def test_baselines_import_graph_has_no_cycle():
    """Every import between baselines/ modules, including those inside functions, points one
    way (catalog -> nets/backbone -> heads/tuned -> models)."""
    import ast

    graph: dict[str, set[str]] = {}
    for path in sorted(catalog.HERE.glob("*.py")):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("baselines"):
                deps.add(node.module)
                deps |= {f"baselines.{a.name}" for a in node.names if node.module == "baselines"}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("baselines.")}
        graph[f"baselines.{path.stem}"] = deps - {"baselines"}

    def visit(module: str, stack: tuple[str, ...]) -> None:
        assert module not in stack, " -> ".join((*stack, module))
        for dep in sorted(graph.get(module, ())):
            visit(dep, (*stack, module))

    for module in graph:
        visit(module, ())


def test_unknown_baseline_suggests_the_closest_name():
    with pytest.raises(AttribBenchError, match="did you mean 'dino_vitb16'"):
        get_spec("dino_vit16")


@pytest.mark.slow
@pytest.mark.parametrize("name", WEIGHTED)
def test_every_entry_builds_its_architecture_with_random_weights(name):
    spec = CATALOG[name]
    b = Baseline(name, random_weights=True)
    x = b.preprocess(IMAGE)
    assert x.shape == (3, spec.preprocess.crop, spec.preprocess.crop)
    f = features(b, [IMAGE, IMAGE.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    assert f.shape == (2, spec.dim) and torch.isfinite(f).all()
    assert b.spec["random_weights"] is True and b.spec["weights_sha256"] is None


def test_list_baselines_shows_every_entry():
    out = CliRunner().invoke(main, ["list", "baselines"])
    assert out.exit_code == 0, out.output
    for name in CATALOG:
        assert name in out.output


# --------------------------------------------------------------------------------------------
# weights resolution


def test_offline_without_weights_is_one_clear_line(offline_home):
    for name in ("dino_vitb16", "mocov3_vitb16.300ep"):
        spec = CATALOG[name]
        with pytest.raises(AttribBenchError) as err:
            Baseline(name)
        line = err.value.line()
        assert spec.weights.filename in line and spec.weights.source in line
        assert weights.ENV_DIR in line and "\n" not in line
    result = CliRunner().invoke(main, ["evaluate", "--baseline", "dino_vitb16", "-b", "abc-tiny"])
    assert result.exit_code == 2
    assert result.output.startswith("error: dino_vitb16:") and "Traceback" not in result.output


def test_missing_weights_path_names_the_expected_file(offline_home):
    with pytest.raises(AttribBenchError, match=r"--weights.*not found.*vit-b-300ep\.pth\.tar"):
        Baseline("mocov3_vitb16.300ep", weights=offline_home)


def _save_hub_file(root, repo: str, filename: str, tensors: dict) -> str:
    """Write ``tensors`` where huggingface_hub's cache keeps ``repo``'s ``filename``."""
    from safetensors.torch import save_file

    revision = "0123456789abcdef0123456789abcdef01234567"
    folder = root / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "snapshots" / revision).mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, folder / "snapshots" / revision / filename
    )
    return revision


@pytest.mark.slow
def test_timm_weights_load_from_the_hub_cache_layout(offline_home, monkeypatch):
    import timm

    source = timm.create_model("vit_base_patch16_224", num_classes=0).eval()
    _save_hub_file(
        offline_home, "timm/vit_base_patch16_224.dino", "model.safetensors", source.state_dict()
    )
    b = Baseline("dino_vitb16")
    ims = images()
    with torch.inference_mode():
        want = source(torch.stack([b.preprocess(im) for im in ims]))
    assert torch.allclose(features(b, ims), want, atol=1e-5)
    assert b.spec["random_weights"] is False and len(b.weights_sha256) == 64
    # A pinned sha256 that the file does not have is refused, naming the source.
    set_pin(monkeypatch, "dino_vitb16", "f" * 64)
    with pytest.raises(AttribBenchError, match=r"is not the pinned ffff.*fetch hf://timm"):
        Baseline("dino_vitb16")


@pytest.mark.slow
def test_timm_checkpoints_with_classifier_and_other_resolution_load(offline_home, monkeypatch):
    """AugReg ships a 1000-class head (dropped); DINOv2 ships 518px position embeddings
    (resampled to 224 by timm's checkpoint filter). Both read from $ATTRIB_BENCH_WEIGHTS."""
    import timm
    from safetensors.torch import save_file

    folder = offline_home / "weights"
    folder.mkdir()
    monkeypatch.setenv(weights.ENV_DIR, str(folder))
    augreg = timm.create_model("vit_base_patch16_384").eval()  # with its 1000-class head
    save_file(augreg.state_dict(), folder / "model.safetensors")
    b = Baseline("vit_base_patch16_384.augreg_in21k_ft_in1k")
    x = torch.stack([b.preprocess(im) for im in images(1)])
    with torch.inference_mode():
        assert torch.allclose(
            b.embed(x), augreg.forward_head(augreg.forward_features(x), pre_logits=True), atol=1e-5
        )

    dinov2 = timm.create_model("vit_base_patch14_dinov2", num_classes=0)  # 518 px, 37x37 grid
    save_file(dinov2.state_dict(), folder / "model.safetensors")
    b = Baseline("dinov2_vitb14.lvd142m")
    assert b.model.pos_embed.shape[1] == 16 * 16 + 1
    assert torch.equal(b.model.blocks[3].ls1.gamma, dinov2.blocks[3].ls1.gamma)
    assert features(b, images(1)).shape == (1, 768)


@pytest.mark.slow
def test_mocov3_training_checkpoint_loads_its_base_encoder(offline_home):
    import timm

    source = timm.create_model("vit_base_patch16_224", num_classes=0).eval()
    state = {f"module.base_encoder.{k}": v for k, v in source.state_dict().items()}
    state["module.base_encoder.head.0.weight"] = torch.randn(4096, 768)  # projection MLP
    state["module.momentum_encoder.cls_token"] = torch.randn(1, 1, 768)
    state["module.predictor.0.weight"] = torch.randn(4096, 256)
    path = offline_home / "vit-b-300ep.pth.tar"
    torch.save({"epoch": 300, "arch": "vit_base", "state_dict": state, "optimizer": {}}, path)
    b = Baseline("mocov3_vitb16.300ep", weights=path)
    ims = images()
    with torch.inference_mode():
        want = source(torch.stack([b.preprocess(im) for im in ims]))
    assert torch.allclose(features(b, ims), want, atol=1e-5)


@pytest.mark.slow
def test_wrong_checkpoint_is_refused_naming_the_missing_keys(offline_home):
    path = offline_home / "vit-b-300ep.pth.tar"
    torch.save({"state_dict": {"module.base_encoder.cls_token": torch.zeros(1, 1, 768)}}, path)
    with pytest.raises(AttribBenchError, match=r"does not fit vit_base_patch16_224: missing"):
        Baseline("mocov3_vitb16.300ep", weights=path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(AttribBenchError, match="cannot read it as state_dict"):
        Baseline("mocov3_vitb16.300ep", weights=path)


@pytest.mark.slow
def test_sscd_torchscript_archive_loads_as_is(offline_home):
    source = SSCDNet().eval()
    path = offline_home / "sscd_disc_mixup.torchscript.pt"
    with pytest.warns(FutureWarning):  # torch.jit.script is deprecated; upstream ships it
        torch.jit.script(source).save(str(path))
    b = Baseline("sscd_resnet50.disc_mixup", weights=path)
    ims = images()
    with torch.inference_mode():
        want = source(torch.stack([b.preprocess(im) for im in ims]))
    got = features(b, ims)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(got.norm(dim=1), torch.ones(2))  # SSCD descriptors are L2-normalized


def _scripted_state(state: dict[str, torch.Tensor]) -> torch.jit.ScriptModule:
    """A TorchScript archive whose state dict is ``state`` (the shape of OpenAI's CLIP .pt)."""
    root = torch.nn.Module()
    for key, value in state.items():
        *path, leaf = key.split(".")
        node = root
        for part in path:
            if not hasattr(node, part):
                node.add_module(part, torch.nn.Module())
            node = getattr(node, part)
        node.register_buffer(leaf, value)
    return torch.jit.script(root)


@pytest.mark.slow
def test_openai_clip_archive_loads_and_its_pin_is_checked(offline_home, monkeypatch):
    import open_clip

    source = open_clip.create_model("ViT-B-32-quickgelu").eval()
    state = {k: v.half() for k, v in source.state_dict().items()}  # OpenAI ships fp16
    state["input_resolution"] = torch.tensor(224)
    path = offline_home / "ViT-B-32.pt"
    with pytest.warns(FutureWarning):
        _scripted_state(state).save(str(path))
    # The real pin (OpenAI's published sha256) rejects these random weights...
    with pytest.raises(AttribBenchError, match="is not the pinned 40d365715913"):
        Baseline("clip_vit_b32.openai", weights=path)
    # ...and with the pin set to this file they load through the same code path.
    set_pin(monkeypatch, "clip_vit_b32.openai", weights.file_sha256(path))
    b = Baseline("clip_vit_b32.openai", weights=path)
    ims = images()
    with torch.inference_mode():
        half = source.half().float()  # the fp16 round trip the file went through
        want = half.encode_image(torch.stack([b.preprocess(im) for im in ims]))
    assert torch.allclose(features(b, ims), want, atol=1e-4)


@pytest.mark.slow
def test_open_clip_safetensors_load_from_the_hub_cache(offline_home):
    spec = CATALOG["clip_vit_l14.laion2b_s32b_b82k"]
    source = build_backbone(spec, None)  # the image tower with random weights
    import open_clip

    full = open_clip.create_model("ViT-L-14")
    full.visual.load_state_dict(source.visual.state_dict())
    _save_hub_file(offline_home, spec.weights.hub_repo, spec.weights.filename, full.state_dict())
    del full
    b = Baseline(spec.name)
    ims = images(1)
    with torch.inference_mode():
        want = source(torch.stack([b.preprocess(im) for im in ims]))
    assert torch.allclose(features(b, ims), want, atol=1e-4)


def test_lock_file_is_valid_json_with_the_openai_pin():
    data = json.loads(catalog.LOCK_FILE.read_text())
    assert (
        data["weights"]["clip_vit_b32.openai"]["sha256"]
        in CATALOG["clip_vit_b32.openai"].weights.url
    )


def test_pin_records_the_hub_commit_and_sha256_and_never_overwrites(tmp_path, monkeypatch):
    """`baselines pin` up to the network call: the Hub's answer is served from memory."""
    from types import SimpleNamespace

    lock = tmp_path / "weights.lock.json"
    lock.write_text(catalog.LOCK_FILE.read_text())
    monkeypatch.setattr(catalog, "LOCK_FILE", lock)
    served = {"sha": "c" * 40, "file_sha": "d" * 64}

    class Hub:
        def model_info(self, repo, files_metadata=False):
            assert files_metadata and repo == "timm/vit_base_patch16_224.dino"
            sibling = SimpleNamespace(
                rfilename="model.safetensors", lfs=SimpleNamespace(sha256=served["file_sha"])
            )
            return SimpleNamespace(sha=served["sha"], siblings=[sibling])

    monkeypatch.setattr("huggingface_hub.HfApi", Hub)
    out = CliRunner().invoke(main, ["baselines", "pin", "dino_vitb16"])
    assert out.exit_code == 0, out.output
    assert catalog.pin("dino_vitb16") == {"revision": "c" * 40, "sha256": "d" * 64}
    served["file_sha"] = "e" * 64  # upstream changed the file under the same name
    out = CliRunner().invoke(main, ["baselines", "pin", "dino_vitb16"])
    assert out.exit_code == 2
    assert "upstream now serves sha256 eeee" in out.output
    assert catalog.pin("dino_vitb16")["sha256"] == "d" * 64
