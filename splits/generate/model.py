"""The tiny base text-to-image model of AbC-mini, in the diffusers Stable Diffusion layout.

Same architecture family as Stable Diffusion v1.4 (AutoencoderKL, UNet2DConditionModel with
cross-attention, CLIPTextModel), scaled down: 64x64 RGB images, an f=4 autoencoder (16x16x4
latents), a small UNet and a small text encoder over a word-level vocabulary.

Tokenizer: a word-level fast tokenizer with CLIP's special tokens. CLIP's byte-level BPE
cannot guarantee that every word of a small custom vocabulary is one token (a merge learned
for one word can split another), and a few-thousand-word vocabulary keeps the text encoder
from being mostly embedding table. On Stable Diffusion v1.4 the model's own CLIPTokenizer is
used; the pipeline only needs ``tokenizer(...)`` and ``add_tokens``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

BOS, EOS, PAD, UNK = "<|startoftext|>", "<|endoftext|>", "<|pad|>", "<|unk|>"


@dataclass(frozen=True)
class TinyModelConfig:
    image_size: int = 64
    vae_channels: tuple[int, ...] = (32, 64, 64)  # three blocks: two downsamplings, f=4
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (64, 128, 128)
    text_dim: int = 256
    text_layers: int = 4
    text_heads: int = 4
    max_tokens: int = 16

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)


# The same architecture, a few thousand parameters wide: smoke runs and tests.
SMOKE = TinyModelConfig(
    vae_channels=(16, 16, 16),
    unet_channels=(16, 32, 32),
    text_dim=32,
    text_layers=1,
    text_heads=2,
)


def random_pipeline(words: Iterable[str], cfg: TinyModelConfig = SMOKE, seed: int = 0):
    """A randomly initialized pipeline whose tokenizer knows ``words``."""
    import torch

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(words, cfg.max_tokens)
    pipe = assemble_pipeline(*build_models(cfg, len(tokenizer)), tokenizer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tokenizer(words: Iterable[str], max_tokens: int):
    """A word-level tokenizer over ``words`` (lower-cased), punctuation split off."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([PAD, BOS, EOS, UNK, ".", ","])}
    for w in sorted({w.lower() for w in words}):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=max_tokens,
    )


def build_models(cfg: TinyModelConfig, vocab_size: int):
    """Randomly initialized (vae, unet, text_encoder) for ``cfg``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    n = len(cfg.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=cfg.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels,
        layers_per_block=1,
        norm_num_groups=16,
        sample_size=cfg.image_size,
    )
    unet = UNet2DConditionModel(
        sample_size=cfg.latent_size,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        layers_per_block=1,
        block_out_channels=cfg.unet_channels,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cfg.text_dim,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=cfg.text_dim,
            intermediate_size=2 * cfg.text_dim,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads,
            max_position_embeddings=cfg.max_tokens,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
    )
    return vae, unet, text


def assemble_pipeline(vae, unet, text_encoder, tokenizer):
    """A StableDiffusionPipeline around the parts (no safety checker: synthetic data)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
