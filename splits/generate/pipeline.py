"""End to end: customize every model of a domain, sample its queries, freeze a benchmark.

Work is per customized model and resumable: a model whose ``done.json`` exists is skipped, so
an interrupted run continues where it stopped, and ``num_shards`` / ``shard_index`` split the
models over machines (each writes its own model folders; ``freeze`` runs once at the end).
Queries are always sampled from the base model plus the saved delta, the same path anyone
regenerating a query takes.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import io
import json
import queue
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from benchmark.errors import AttribBenchError
from benchmark.splits import Benchmark, write_benchmark
from benchmark.types import CustomModel, Part, PromptType, Query
from splits.generate.customize import CustomizeConfig, customize, load_delta, save_delta
from splits.generate.domain import TEMPLATE, Domain, ModelSpec
from splits.generate.sample import SamplerConfig, prompts, query_seed, sample
from splits.generate.sources import square_rgb


@dataclass(frozen=True)
class GenerateConfig:
    base_model: str  # a local pipeline folder (or a Hub id for Stable Diffusion)
    customize: CustomizeConfig = field(default_factory=CustomizeConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    queries_per_type: int = 8
    prior_images: int = 8
    image_size: int = 64
    template_prompts: bool = False  # phrase prompts in a small base model's caption template
    base_samples: bool = False  # also sample the base model (prompt without the token, same seed)
    # How freeze stores images: "png" (lossless) or "webp" (lossy at webp_quality).
    image_format: str = "png"
    webp_quality: int = 90


def encode(image: Image.Image, cfg: GenerateConfig) -> bytes:
    """Image bytes as the frozen benchmark stores them (deterministic for a given Pillow)."""
    buf = io.BytesIO()
    if cfg.image_format == "webp":
        image.convert("RGB").save(buf, format="WEBP", quality=cfg.webp_quality, method=6)
    elif cfg.image_format == "png":
        image.save(buf, format="PNG")
    else:
        raise ValueError(f"image_format {cfg.image_format!r}: use png or webp")
    return buf.getvalue()


def training_prompt(spec: ModelSpec) -> str:
    if spec.kind == "object":
        return f"a photo of a <new1> {spec.noun}"
    return "a drawing in the style of <new1> art"


def select_models(specs: Sequence[ModelSpec], patterns: Sequence[str] = ()) -> list[ModelSpec]:
    """``specs`` whose id matches one of the globs ``patterns`` (all of them without any)."""
    if not patterns:
        return list(specs)
    return [s for s in specs if any(fnmatch.fnmatchcase(s.model_id, p) for p in patterns)]


def delta_words(spec: ModelSpec, cfg: GenerateConfig) -> tuple[str, ...]:
    """Words whose embedding rows the delta carries: an unseen object's noun, if the recipe
    says so (``customize.unseen_noun``)."""
    if cfg.customize.unseen_noun and spec.part == Part.OBJECT_UNSEEN:
        return (spec.noun,)
    return ()


def prompt_types(spec: ModelSpec) -> tuple[PromptType, PromptType]:
    second = PromptType.MEDIA if spec.kind == "object" else PromptType.OBJECT
    return PromptType.GPT, second


def load_base(cfg: GenerateConfig):
    """The base pipeline of ``cfg`` in fp32 with the configured scheduler (no delta yet)."""
    import diffusers
    from diffusers import StableDiffusionPipeline

    # fp16 checkpoints (the shipped AbC-mini base model) compute in fp32 on CPU.
    pipe = StableDiffusionPipeline.from_pretrained(cfg.base_model, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if type(pipe.scheduler).__name__ != cfg.sampler.scheduler:  # e.g. SD v1.4 ships PNDM
        scheduler_cls = getattr(diffusers, cfg.sampler.scheduler)
        pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    return pipe


def _prior(domain: Domain, spec: ModelSpec, count: int, size: int):
    """Real training images for prior preservation: same caption noun, or any drawings."""
    if spec.kind == "object":
        want = TEMPLATE.format(medium="photo", noun=spec.noun)
        pool = [p for p, c in zip(domain.pretrain, domain.captions, strict=True) if c == want]
        cap = want
    else:
        pool = [p for p in domain.pretrain if p.package == "openclipart-png"]
        cap = "a drawing"
    return [(square_rgb(p.path, size), cap) for p in pool[:count]]


def untokened(prompt: str, token: str = "<new1>") -> str:
    """The prompt a base model gets for comparison: the same words without the new token."""
    return " ".join(w for w in prompt.split() if w != token)


def _sample_to(folder: Path, pipe, qids, texts, seeds, cfg: GenerateConfig) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for qid, image in zip(qids, sample(pipe, texts, seeds, cfg.sampler), strict=True):
        image.save(folder / f"{qid}.png")


def _round_robin(specs: list[ModelSpec]) -> list[ModelSpec]:
    """``specs`` interleaved by part (the first of each part, then the second, ...).

    Each model is seeded on its own, so the order changes no result; it only makes a partial
    run cover every test case early, so its signal can be checked before the run ends.
    """
    by_part: dict[str, list[ModelSpec]] = {}
    for spec in specs:
        by_part.setdefault(spec.part.value, []).append(spec)
    rows = max((len(v) for v in by_part.values()), default=0)
    return [v[i] for i in range(rows) for v in by_part.values() if i < len(v)]


def _missing_images(folder: Path, info: dict, base_samples: bool) -> bool:
    sides = ("queries", "base") if base_samples else ("queries",)
    return any(
        not (folder / side / f"{q['query_id']}.png").is_file()
        for q in info["queries"]
        for side in sides
    )


def generate_models(
    domain: Domain,
    cfg: GenerateConfig,
    out_dir: str | Path,
    *,
    num_shards: int = 1,
    shard_index: int = 0,
    progress: Callable[[str], None] | None = None,
    only: Sequence[str] = (),
    deltas_from: str | Path | None = None,
) -> list[Path]:
    """Customize and sample this shard's models; return their folders (in domain order).

    ``only``: globs of model ids; when given, models matching none are skipped (probes).
    ``deltas_from``: another run folder; a model it finished with the same customization
    (:data:`DELTA_SETTINGS` of its recipe) is not customized again: its delta is copied and
    only sampling runs (a change of sampler or prompts costs a quarter of a full run); its
    ``done.json`` records ``delta_from``. Other models are customized as usual.

    A model with a ``done.json`` is not customized again. If its images are gone (only the
    small ``delta/`` and ``done.json`` were kept), they are sampled again from base + delta
    with the recorded prompts and seeds, which gives the same images.
    """
    out = Path(out_dir)
    mine = select_models(domain.models[shard_index::num_shards], only)
    for spec in _round_robin(mine):
        folder = out / "models" / spec.model_id
        done = folder / "done.json"
        if done.is_file():
            info = json.loads(done.read_text())
            _check_recipe(done, info, model_recipe(spec, cfg))
            if _missing_images(folder, info, cfg.base_samples):
                with _torch_threads(info.get("torch_threads")):
                    _resample(spec, cfg, folder, info["queries"])
                if progress:
                    progress(spec.model_id)
            continue
        started = time.perf_counter()
        donor = _donor(deltas_from, spec, cfg)
        if donor is not None:
            shutil.rmtree(folder / "delta", ignore_errors=True)  # a half-written one
            shutil.copytree(donor / "delta", folder / "delta")
            stats = json.loads((donor / "done.json").read_text())["customize"]
        else:
            stats = _customize_to(folder / "delta", domain, spec, cfg)
        customized = time.perf_counter()
        records = []
        for ptype in prompt_types(spec):
            texts = prompts(
                spec.kind,
                ptype,
                cfg.queries_per_type,
                category=spec.noun,
                template=cfg.template_prompts,
            )
            for i, text in enumerate(texts):
                records.append(
                    {
                        "query_id": f"{spec.model_id}-{ptype.value}-{i:02d}",
                        "prompt": text,
                        "prompt_type": ptype.value,
                        "seed": query_seed(spec.model_id, ptype, i),
                    }
                )
        _resample(spec, cfg, folder, records)
        done.write_text(
            json.dumps(
                {
                    "model_id": spec.model_id,
                    "part": spec.part.value,
                    "kind": spec.kind,
                    "noun": spec.noun,
                    "exemplars": [e.image_id for e in spec.exemplars],
                    "training_prompt": training_prompt(spec),
                    "customize": stats,
                    "recipe": model_recipe(spec, cfg),
                    **({"delta_from": donor.as_posix()} if donor is not None else {}),
                    # CPU results depend on torch's thread count (how sums are split), so
                    # images are resampled with the same count (above).
                    "torch_threads": torch.get_num_threads(),
                    "seconds": {
                        "customize": round(customized - started, 2),
                        "sample": round(time.perf_counter() - customized, 2),
                    },
                    "queries": records,
                },
                indent=1,
            )
        )
        if progress:
            progress(spec.model_id)
    return [out / "models" / spec.model_id for spec in mine]


def _customize_to(delta: Path, domain: Domain, spec: ModelSpec, cfg: GenerateConfig) -> dict:
    """Customize the base model on ``spec``'s exemplars, save the delta, return the stats."""
    pipe = load_base(cfg)
    exemplars = [square_rgb(e.path, cfg.image_size) for e in spec.exemplars]
    words = delta_words(spec, cfg)
    settings = cfg.customize.for_kind(spec.kind)
    stats = customize(
        pipe,
        exemplars,
        training_prompt(spec),
        settings,
        prior=_prior(domain, spec, cfg.prior_images, cfg.image_size),
        words=words,
    )
    save_delta(pipe, delta, settings.token, settings.delta_rank, words=words)
    return stats


# The recipe settings a model's delta depends on (the rest only shape its prompts and images).
DELTA_SETTINGS = ("base_model", "customize", "prior_images", "image_size")


def _donor(deltas_from: str | Path | None, spec: ModelSpec, cfg: GenerateConfig) -> Path | None:
    """The folder of ``spec``'s model in run ``deltas_from`` if its delta can serve ``cfg``:
    finished there, with the same :data:`DELTA_SETTINGS` recorded. Otherwise None, and the
    model is customized anew (so a recipe that changes one kind's customization reuses the
    other kind's deltas)."""
    if deltas_from is None:
        return None
    folder = Path(deltas_from) / "models" / spec.model_id
    done = folder / "done.json"
    if not done.is_file():
        return None
    recorded = json.loads(done.read_text()).get("recipe") or {}
    ours = model_recipe(spec, cfg)
    if any(recorded.get(k) != ours[k] for k in DELTA_SETTINGS):
        return None
    return folder


def model_recipe(spec: ModelSpec, cfg: GenerateConfig) -> dict:
    """What one model's delta and images depend on besides its seeds: recorded in its
    ``done.json`` and checked when a run resumes."""
    recipe = {
        "base_model": base_model_digest(cfg.base_model),
        "customize": cfg.customize.for_kind(spec.kind).to_dict(),
        "prior_images": cfg.prior_images,
        "image_size": cfg.image_size,
        "sampler": cfg.sampler.to_dict(),
        "queries_per_type": cfg.queries_per_type,
        "template_prompts": cfg.template_prompts,
    }
    return json.loads(json.dumps(recipe))  # as read back from done.json (tuples -> lists)


@functools.cache
def base_model_digest(base_model: str) -> str:
    """A local pipeline folder: sha256 over its files' paths and bytes (16 hex digits); a Hub
    id: the id itself."""
    folder = Path(base_model)
    if not folder.is_dir():
        return base_model
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return "sha256:" + h.hexdigest()[:16]


def _check_recipe(done: Path, info: dict, recipe: dict) -> None:
    """A finished model made with other settings is not this recipe's model: stop, naming
    the first setting that differs. (``done.json`` files written before the record existed
    carry none and are taken as they are.)"""
    recorded = info.get("recipe")
    if recorded is None or recorded == recipe:
        return
    key = _first_difference(recorded, recipe)
    raise AttribBenchError(
        done,
        f"recipe.{key}",
        f"this model was made with {key} = {_at(recorded, key)!r}, the recipe says "
        f"{_at(recipe, key)!r}",
        f"delete {done.parent} to make it again with this recipe, or pass the config it was "
        "made with",
    )


def _first_difference(a: dict, b: dict, prefix: str = "") -> str:
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            if x != y:
                return _first_difference(x, y, f"{prefix}{key}.")
        elif x != y:
            return f"{prefix}{key}"
    return prefix.rstrip(".")


def _at(tree: dict, dotted: str):
    for key in dotted.split("."):
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run the block with n torch threads (None: as they are)."""
    saved = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def generate_in_parallel(
    domain: Domain,
    cfg: GenerateConfig,
    out_dir: str | Path,
    jobs: int,
    *,
    num_shards: int = 1,
    shard_index: int = 0,
    progress: Callable[[str], None] | None = None,
    only: Sequence[str] = (),
    deltas_from: str | Path | None = None,
) -> list[Path]:
    """:func:`generate_models` in ``jobs`` processes of one torch thread each.

    The models are small enough that one process does not keep two cores busy: a training
    step of batch 4 took 0.207 s on one thread and 0.152 s on two, while two one-thread
    processes side by side took 0.210 s each, ~1.4x the throughput of one two-thread
    process (benchmarks/bench_pretrain_step.py's UNet step, 2-core CPU). Job j of shard s of
    n is shard s + n j of n x jobs, so shards and jobs compose and a run can be resumed with
    any other number of jobs; every model keeps its own seeds, so its delta and images do
    not depend on which job made it. A job's error stops the run after the other jobs
    finish their current model.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if jobs <= 1:
        return generate_models(
            domain, cfg, out_dir, num_shards=num_shards, shard_index=shard_index,
            progress=progress, only=only, deltas_from=deltas_from,
        )  # fmt: skip
    ctx = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with (
        ctx.Manager() as manager,
        ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_one_thread) as pool,
    ):
        finished, stop = manager.Queue(), manager.Event()
        futures = [
            pool.submit(
                _generate_job,
                domain,
                cfg,
                str(out_dir),
                num_shards * jobs,
                shard_index + num_shards * j,
                tuple(only),
                deltas_from,
                finished,
                stop,
            )
            for j in range(jobs)
        ]
        while not all(f.done() for f in futures):
            if any(f.done() and f.exception() for f in futures):
                stop.set()
            try:
                model_id = finished.get(timeout=1.0)
            except queue.Empty:
                continue
            if progress:
                progress(model_id)
        while not finished.empty():
            model_id = finished.get()
            if progress:
                progress(model_id)
        folders = [folder for f in futures for folder in f.result()]  # a job's error: raised
    order = {m.model_id: i for i, m in enumerate(domain.models)}
    return sorted(folders, key=lambda folder: order[folder.name])


def _one_thread() -> None:
    torch.set_num_threads(1)


class _Stopped(Exception):
    """Another job failed: this one stops after the model it just finished."""


def _generate_job(
    domain, cfg, out_dir, num_shards, shard_index, only, deltas_from, finished, stop
) -> list[Path]:
    def report(model_id: str) -> None:
        finished.put(model_id)
        if stop.is_set():
            raise _Stopped

    try:
        return generate_models(
            domain, cfg, out_dir, num_shards=num_shards, shard_index=shard_index,
            progress=report, only=only, deltas_from=deltas_from,
        )  # fmt: skip
    except _Stopped:
        return []


def _resample(spec: ModelSpec, cfg: GenerateConfig, folder: Path, records: list[dict]) -> None:
    """Sample a model's queries from base + its saved delta (and base samples if configured).

    Queries are sampled per prompt type in the recorded order, batch by batch, exactly as
    when the model was first generated.
    """
    regen = load_base(cfg)
    load_delta(regen, folder / "delta")
    base = load_base(cfg) if cfg.base_samples else None
    for ptype in dict.fromkeys(r["prompt_type"] for r in records):
        rows = [r for r in records if r["prompt_type"] == ptype]
        qids = [r["query_id"] for r in rows]
        texts = [r["prompt"] for r in rows]
        seeds = [r["seed"] for r in rows]
        _sample_to(folder / "queries", regen, qids, texts, seeds, cfg)
        if base is not None:
            _sample_to(folder / "base", base, qids, [untokened(t) for t in texts], seeds, cfg)


def freeze(
    domain: Domain,
    cfg: GenerateConfig,
    out_dir: str | Path,
    dest: str | Path,
    *,
    name: str,
    version: str,
    description: str,
) -> Benchmark:
    """Write the benchmark folder from finished model folders (all shards must be done)."""
    out = Path(out_dir)
    images = domain_images(domain, cfg.image_size)
    kept_exemplars, distractor_ids = distinct_images(domain, images, lambda im: encode(im, cfg))
    models, queries, exemplars = [], [], {}
    for spec in domain.models:
        done = out / "models" / spec.model_id / "done.json"
        if not done.is_file():
            raise FileNotFoundError(f"{done}: model not generated yet; run generate first")
        info = json.loads(done.read_text())
        # The manifest records cfg as how every query was made: it must be.
        _check_recipe(done, info, model_recipe(spec, cfg))
        category = spec.noun if spec.kind == "object" else "style"
        ids = kept_exemplars[spec.model_id]
        models.append(CustomModel(spec.model_id, spec.part, category, ids))
        for image_id in ids:
            exemplars[image_id] = encode(images[image_id], cfg)
        for r in info["queries"]:
            q = Query(
                r["query_id"],
                spec.model_id,
                spec.part,
                r["prompt"],
                PromptType(r["prompt_type"]),
                r["seed"],
                cfg.sampler.scheduler,
            )
            png = out / "models" / spec.model_id / "queries" / f"{q.query_id}.png"
            with Image.open(png) as im:
                queries.append((q, encode(im, cfg)))
    caption_of = dict(zip((p.image_id for p in domain.pretrain), domain.captions, strict=True))
    distractors = [(i, caption_of[i], encode(images[i], cfg)) for i in distractor_ids]
    licenses = sorted({(e.package, e.license) for e in domain.pretrain})
    artifacts, base_ref = _store_artifacts(domain, cfg, out, Path(dest))
    return write_benchmark(
        dest,
        name=name,
        version=version,
        description=description,
        license="other",  # per source, listed in the card (Hugging Face convention)
        models=models,
        queries=queries,
        exemplars=list(exemplars.items()),
        distractors=distractors,
        generator={
            "base_model": base_ref,
            "deltas": "deltas/{model_id}",
            "customize": cfg.customize.to_dict(),
            "sampler": cfg.sampler.to_dict(),
            "queries_per_type": cfg.queries_per_type,
            "prior_images": cfg.prior_images,
            "image_size": cfg.image_size,
            "template_prompts": cfg.template_prompts,
            "image_format": cfg.image_format,
        },
        sources=[
            {"name": p, "license": lic, "url": f"https://packages.debian.org/{p}"}
            for p, lic in licenses
        ],
        artifacts=artifacts,
    )


def _store_artifacts(
    domain: Domain, cfg: GenerateConfig, run: Path, dest: Path
) -> tuple[list[str], str]:
    """Put the base model (when local) and every delta under ``dest``.

    A local base model already inside ``dest`` (AbC-mini ships it there) stays where it is;
    one elsewhere is copied to ``dest/base-model``. Returns the files' paths relative to
    ``dest`` and the base model as the benchmark names it (a folder inside it, or a Hub id).
    """
    dest.mkdir(parents=True, exist_ok=True)
    for derived in ("data", "deltas"):  # rewritten whole: nothing stale may be hashed in
        shutil.rmtree(dest / derived, ignore_errors=True)
    files = []
    base, base_ref = Path(cfg.base_model), cfg.base_model
    if base.is_dir():
        if not base.resolve().is_relative_to(dest.resolve()):
            shutil.copytree(base, dest / "base-model", dirs_exist_ok=True)
            base = dest / "base-model"
        files += [p for p in base.rglob("*") if p.is_file()]
        base_ref = base.resolve().relative_to(dest.resolve()).as_posix()
    for spec in domain.models:
        target = dest / "deltas" / spec.model_id
        shutil.copytree(run / "models" / spec.model_id / "delta", target, dirs_exist_ok=True)
        files += [p for p in target.rglob("*") if p.is_file()]
    return sorted(p.resolve().relative_to(dest.resolve()).as_posix() for p in files), base_ref


def domain_images(domain: Domain, size: int) -> dict[str, Image.Image]:
    """Every pretraining, distractor and exemplar image of ``domain`` at benchmark size."""
    sources = [
        *domain.pretrain,
        *domain.distractors,
        *(e for m in domain.models for e in m.exemplars),
    ]
    return {p.image_id: square_rgb(p.path, size) for p in {p.image_id: p for p in sources}.values()}


def distinct_images(
    domain: Domain,
    images: dict[str, Image.Image],
    stored: Callable[[Image.Image], bytes] | None = None,
) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """Exemplar sets and distractors with no pixel-identical repeats, as frozen.

    The sources repeat some pictures under other names (an artist uploading a drawing twice,
    one clip-art in two packages); at the benchmark's resolution those are the same image.
    ``stored``: how the benchmark stores an image (:func:`encode`); pictures are then compared
    as a method will see them, decoded from those bytes, since a lossy format can make two
    nearly identical renderings equal (two 64x64 flat icons in 0.4.0's first freeze).
    A model keeps the first of each repeated exemplar (it was customized on the same pixels
    either way). A distractor identical to any exemplar, or to an earlier distractor, is
    dropped, so a perfect method can rank every exemplar first; the pool is refilled to its
    size from the other pretraining images, in an order fixed by a hash of their ids.

    Returns each model's exemplar ids and the distractor ids, in order.
    """

    def key(image_id: str) -> str:
        image = images[image_id]
        if stored is not None:
            with Image.open(io.BytesIO(stored(image))) as im:
                image = im.convert("RGB")
        return hashlib.sha256(image.tobytes()).hexdigest()

    kept: dict[str, tuple[str, ...]] = {}
    exemplar_keys = set()
    for m in domain.models:
        seen: dict[str, str] = {}
        for e in m.exemplars:
            seen.setdefault(key(e.image_id), e.image_id)
        kept[m.model_id] = tuple(seen.values())
        exemplar_keys |= set(seen)
    chosen = {d.image_id for d in domain.distractors}
    refill = sorted(
        (p.image_id for p in domain.pretrain if p.image_id not in chosen),
        key=lambda i: hashlib.sha256(i.encode()).hexdigest(),
    )
    taken, keys = [], set(exemplar_keys)
    for image_id in [*(d.image_id for d in domain.distractors), *refill]:
        if len(taken) == len(domain.distractors):
            break
        k = key(image_id)
        if k not in keys:
            keys.add(k)
            taken.append(image_id)
    return kept, sorted(taken)
