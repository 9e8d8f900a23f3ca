"""Pretraining: runs end to end on a few images, and resuming equals not stopping."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers")

import torch
from safetensors.torch import load_file

from splits.generate.model import SMOKE as SMALL
from splits.generate.pretrain import PretrainConfig, lr_factor, pretrain

CFG = PretrainConfig(vae_steps=3, unet_steps=4, batch_size=4, checkpoint_every=2)
COSINE = PretrainConfig(
    vae_steps=3, unet_steps=4, batch_size=4, checkpoint_every=2, lr_schedule="cosine",
    warmup_steps=1,
)  # fmt: skip


def data():
    rng = np.random.default_rng(0)
    images = (rng.random((8, 64, 64, 3)) * 255).astype(np.uint8)
    captions = [f"a photo of a {w}" for w in ("cat", "dog", "kite", "lamp") * 2]
    return images, captions


def weights(path):
    return {
        k: v
        for part in ("unet", "text_encoder", "vae")
        for k, v in load_file(str(next((path / part).glob("*.safetensors")))).items()
    }


class Killed(Exception):
    pass


def kill_at(stage, step):
    def progress(s, k, loss):
        assert np.isfinite(loss)
        if (s, k) == (stage, step):
            raise Killed

    return progress


def test_lr_factor_by_hand():
    assert [lr_factor("constant", 0, 6, k) for k in range(6)] == [1.0] * 6
    # warm-up 2 of 6 steps: 1/2, 2/2, then 0.5 (1 + cos(pi (k - 2) / 4)) for k = 2..5
    got = [lr_factor("cosine", 2, 6, k) for k in range(6)]
    want = [0.5, 1.0, 1.0, 0.5 + 0.5 * 2**-0.5, 0.5, 0.5 - 0.5 * 2**-0.5]
    assert np.allclose(got, want, rtol=0, atol=1e-15)
    assert lr_factor("cosine", 0, 4, 0) == 1.0 and lr_factor("cosine", 0, 4, 4) == 0.0
    with pytest.raises(ValueError, match="lr_schedule"):
        PretrainConfig(lr_schedule="linear")


def test_each_step_uses_the_scheduled_learning_rate(tmp_path):
    """One parameter with loss p: its gradient is always 1, so every Adam step moves p by
    exactly the step's learning rate (up to Adam's eps), and p ends at -sum(lr_k)."""
    from splits.generate.pretrain import _run_stage

    p = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
    module = torch.nn.Module()
    module.p = p
    cfg = PretrainConfig(batch_size=1, checkpoint_every=100, lr_schedule="cosine", warmup_steps=2)
    steps, lr = 7, 0.01
    _run_stage(
        tmp_path, "vae", {"m": module}, lr, steps, 4, lambda idx, gen: p * 1.0, cfg, None,
        torch.device("cpu"),
    )  # fmt: skip
    want = -sum(lr * lr_factor("cosine", 2, steps, k) for k in range(steps))
    assert abs(float(p.detach()) - want) < 1e-8
    assert abs(want + lr * steps) > 0.01  # a constant rate would end elsewhere


@pytest.mark.parametrize("cfg", [CFG, COSINE], ids=["constant", "cosine"])
def test_pretrain_killed_and_resumed_matches_uninterrupted(tmp_path, cfg):
    images, captions = data()
    whole = pretrain(tmp_path / "whole", images, captions, SMALL, cfg)
    assert (whole / "model_index.json").is_file()
    # Killed mid-stage twice (after a step, before its checkpoint), then rerun to the end.
    for stage, step in (("vae", 3), ("unet", 3)):
        with pytest.raises(Killed):
            pretrain(
                tmp_path / "resumed", images, captions, SMALL, cfg, progress=kill_at(stage, step)
            )
    resumed = pretrain(tmp_path / "resumed", images, captions, SMALL, cfg)
    a, b = weights(whole), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all(), k
    # Shipped in fp16; loads upcast to fp32 for customization and sampling.
    assert all(v.dtype == torch.float16 for v in a.values() if v.is_floating_point())


@pytest.mark.gpu
def test_pretrain_on_cuda_runs_and_ships_fp16(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    images, captions = data()
    path = pretrain(tmp_path / "cuda", images, captions, SMALL, COSINE, device="cuda")
    w = weights(path)
    assert all(v.dtype == torch.float16 and torch.isfinite(v).all() for v in w.values())
    assert (path / "pretrain.json").read_text().count('"device": "cuda (') == 1


def recipe_file(tmp_path, **domain):
    """A recipe with the smoke-sized model and a 2 + 2-step pretraining."""
    import json
    from dataclasses import asdict

    model = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(SMALL).items()}
    path = tmp_path / "tiny.json"
    path.write_text(
        json.dumps(
            {
                "base_model": str(tmp_path / "base"),
                "model": model,
                "pretrain": {"vae_steps": 2, "unet_steps": 2, "batch_size": 4},
                "domain": domain,
            }
        )
    )
    return path


def test_pool_file_round_trip_and_training_from_it(tmp_path):
    import json

    from splits.generate.config import load_recipe
    from splits.generate.pretrain import load_pool, pretrain_recipe, save_pool

    images, captions = data()
    config = recipe_file(tmp_path)
    domain = load_recipe(config).domain
    save_pool(tmp_path / "pool.npz", images, captions, ["extra", "words"], domain)
    got = load_pool(tmp_path / "pool.npz", domain, 64)
    assert (got[0] == images).all() and got[1] == captions and got[2] == ["extra", "words"]
    # Training reads the file, never the source packages (the cache folder does not exist).
    path, n = pretrain_recipe(
        config, tmp_path / "run", tmp_path / "no-sources", pool=tmp_path / "pool.npz"
    )
    assert n == len(images) and (path / "model_index.json").is_file()
    assert json.loads((path / "pretrain.json").read_text())["device"] == "cpu"


def test_pool_file_of_another_recipe_or_format_is_refused(tmp_path):
    from benchmark.errors import AttribBenchError
    from splits.generate.config import load_recipe
    from splits.generate.pretrain import load_pool, save_pool

    images, captions = data()
    domain = load_recipe(recipe_file(tmp_path)).domain
    other = load_recipe(recipe_file(tmp_path, held_out_fraction=0.5)).domain
    save_pool(tmp_path / "pool.npz", images, captions, [], other)
    with pytest.raises(AttribBenchError, match=r"stamp\.domain.*other domain settings"):
        load_pool(tmp_path / "pool.npz", domain, 64)
    save_pool(tmp_path / "pool.npz", images, captions, [], domain)
    with pytest.raises(AttribBenchError, match=r"images.*not uint8 \[N, 32, 32, 3\]"):
        load_pool(tmp_path / "pool.npz", domain, 32)
    # An object array needs unpickling: refused, never loaded.
    np.savez(tmp_path / "pickled.npz", images=np.array([object()], dtype=object))
    with pytest.raises(AttribBenchError, match="not a pretraining pool file"):
        load_pool(tmp_path / "pickled.npz", domain, 64)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(AttribBenchError, match="not a pretraining pool file"):
        load_pool(tmp_path / "junk.npz", domain, 64)


def test_untrained_words_mean_sets_only_the_rows_no_caption_trains(tmp_path):
    """Prompt-only words end at the mean caption-word row; everything else is the weights of
    the same run without the option."""
    from dataclasses import replace

    from transformers import AutoTokenizer

    images, captions = data()
    extra = ["harbor", "dawn", "cat"]  # "cat" is also a caption word: trained, kept
    plain = pretrain(tmp_path / "plain", images, captions, SMALL, CFG, extra_words=extra)
    mean_cfg = replace(CFG, untrained_words="mean")
    meaned = pretrain(tmp_path / "mean", images, captions, SMALL, mean_cfg, extra_words=extra)
    a, b = weights(plain), weights(meaned)
    key = next(k for k in a if k.endswith("token_embedding.weight"))
    assert all((a[k] == b[k]).all() for k in a if k != key)
    tok = AutoTokenizer.from_pretrained(meaned / "tokenizer")
    ids = tok.convert_tokens_to_ids
    prompt_only = [ids("harbor"), ids("dawn")]
    trained = sorted({ids(w) for w in ["a", "photo", "of", "cat", "dog", "kite", "lamp"]})
    want = a[key][trained].float().mean(dim=0).half()  # mean of the fp16 rows, near fp32's
    for i in prompt_only:
        assert torch.allclose(b[key][i].float(), want.float(), atol=2e-3)
        assert not torch.allclose(a[key][i].float(), want.float(), atol=2e-3)
    others = [i for i in range(len(a[key])) if i not in prompt_only]
    assert (a[key][others] == b[key][others]).all()
    with pytest.raises(ValueError, match="untrained_words"):
        PretrainConfig(untrained_words="zero")
