"""AbC-mini's domain invariants, on a synthetic catalog shaped like the real sources."""

from __future__ import annotations

from dataclasses import astuple
from pathlib import Path

import pytest

from benchmark.types import Part
from splits.generate.domain import BLANK, DomainConfig, build_domain, caption
from splits.generate.sources import SourceImage


def catalog():
    stamps = [
        SourceImage(
            f"tuxpaint-{cat}-{i}",
            Path("x.png"),
            "tuxpaint-stamps-default",
            cat,
            f"A {cat}",
            "tuxpaint-stamps-default",
            "GPL-2.0-or-later",
        )
        for cat, n in (
            ("birds", 20),
            ("fruit", 12),
            ("planets", 6),
            ("rodents", 5),
            ("lowercase", 9),
        )
        for i in range(n)
    ]
    drawings = [
        SourceImage(
            f"openclipart-{artist}-{i}",
            Path("x.png"),
            "openclipart-png",
            ("animals", "shapes", "food")[i % 3],
            "t",
            artist,
            "CC0-1.0",
        )
        for artist, n in [(f"big{a}", 20 + a) for a in range(8)]
        + [(f"small{a}", 5 + a % 5) for a in range(8)]
        + [("tiny", 2)]
        for i in range(n)
    ]
    return stamps, drawings


CFG = DomainConfig(seen_artists=6, unseen_artists=5, distractors=50, max_per_caption=60)


def test_domain_invariants():
    stamps, drawings = catalog()
    d = build_domain(stamps, drawings, CFG)
    train_ids = {p.image_id for p in d.pretrain}
    exemplars = [e for m in d.models for e in m.exemplars]
    assert not train_ids & {e.image_id for e in exemplars}, "an exemplar was trained on"
    assert {x.image_id for x in d.distractors} <= train_ids
    assert len(d.captions) == len(d.pretrain)
    words = {w for c in d.captions for w in c.split()}
    for m in d.models:
        if m.part is Part.OBJECT_UNSEEN:
            assert m.noun not in words, f"unseen noun {m.noun!r} occurs in a caption"
        if m.part is Part.STYLE_UNSEEN:
            assert not any(p.group == m.noun for p in d.pretrain), "unseen artist trained on"
        if m.part is Part.STYLE_SEEN:
            assert any(p.group == m.noun for p in d.pretrain), "seen artist never trained on"
        if m.kind == "style":
            assert 4 <= len(m.exemplars) <= 12
            assert all(e.group == m.noun for e in m.exemplars)
        if m.part in (Part.TRAIN, Part.VAL):
            assert m.noun in words or any(p.group == m.noun for p in d.pretrain)
    parts = {m.part for m in d.models}
    assert parts == set(Part)
    assert all(caption(p, CFG).startswith(("a photo of a ", "a drawing of a ")) for p in d.pretrain)
    assert not any(p.category == "lowercase" for p in d.pretrain)  # outside the domain
    assert max(d.captions.count(c) for c in set(d.captions)) <= CFG.max_per_caption


def test_domain_is_deterministic():
    stamps, drawings = catalog()
    a = build_domain(stamps, drawings, CFG)
    b = build_domain(list(reversed(stamps)), list(reversed(drawings)), CFG)
    assert a == b
    c = build_domain(stamps, drawings, DomainConfig(**{**CFG.__dict__, "seed": 1}))
    assert c != a


def test_model_caps_keep_both_kinds_and_leave_pretraining_alone():
    stamps, drawings = catalog()
    full = build_domain(stamps, drawings, CFG)
    capped = build_domain(
        stamps, drawings, DomainConfig(**{**CFG.__dict__, "max_models": {"train": 2, "val": 1}})
    )
    assert capped.pretrain == full.pretrain and capped.distractors == full.distractors
    train = [m for m in capped.models if m.part is Part.TRAIN]
    assert [m.kind for m in train] == ["object", "style"]
    assert sum(m.part is Part.VAL for m in capped.models) == 1
    untouched = [m for m in full.models if m.part not in (Part.TRAIN, Part.VAL)]
    assert [m for m in capped.models if m.part not in (Part.TRAIN, Part.VAL)] == untouched
    assert set(capped.models) <= set(full.models)


def copies_fingerprint(image: SourceImage) -> str:
    """Renderings for a synthetic catalog: drawing 10+k of a big artist is a copy of drawing k
    (the same picture filed twice), drawing 3 of each big artist renders blank."""
    name, _, index = image.image_id.rpartition("-")
    if "-big" in name and index.isdigit():
        i = int(index)
        if i == 3:
            return BLANK
        return f"{name}-{i - 10 if i >= 10 else i}"
    return image.image_id


def test_content_checks_drop_blank_images_shared_ids_and_exemplar_copies():
    stamps, drawings = catalog()
    twin = SourceImage(stamps[0].image_id, Path("other.png"), *astuple(stamps[0])[2:])
    checked = DomainConfig(**{**CFG.__dict__, "content_checks": True})

    def prints(d):
        trained = {copies_fingerprint(p) for p in d.pretrain}
        shown = {copies_fingerprint(e) for m in d.models for e in m.exemplars}
        everything = [*d.pretrain, *d.distractors, *(e for m in d.models for e in m.exemplars)]
        return trained, shown, everything

    # Without the checks the catalog's copies reach pretraining (so the test below can fail).
    trained, shown, everything = prints(build_domain([*stamps, twin], drawings, CFG))
    assert trained & shown
    assert any(copies_fingerprint(x) == BLANK for x in everything)
    d = build_domain([*stamps, twin], drawings, checked, copies_fingerprint)
    trained, shown, everything = prints(d)
    assert not trained & shown, "a pretraining image renders like an exemplar"
    assert not any(copies_fingerprint(x) == BLANK for x in everything)
    assert stamps[0].image_id not in {x.image_id for x in everything}  # both files dropped
    assert {m.part for m in d.models} == set(Part)
    with pytest.raises(ValueError, match="needs a fingerprint"):
        build_domain(stamps, drawings, checked)


def test_content_audit_counts_what_the_checks_remove():
    from splits.generate.pool import content_audit

    stamps, drawings = catalog()
    twin = SourceImage(stamps[0].image_id, Path("other.png"), *astuple(stamps[0])[2:])
    checked = DomainConfig(**{**CFG.__dict__, "content_checks": True})
    before = build_domain([*stamps, twin], drawings, CFG)
    after = build_domain([*stamps, twin], drawings, checked, copies_fingerprint)
    a = content_audit(before, [*stamps, twin, *drawings], copies_fingerprint)
    b = content_audit(after, [*stamps, twin, *drawings], copies_fingerprint)
    shown = {copies_fingerprint(e) for m in before.models for e in m.exemplars} - {BLANK}
    assert (
        a["pretraining images rendered like an exemplar"]
        == sum(copies_fingerprint(p) in shown for p in before.pretrain)
        > 0
    )
    assert (
        a["blank pretraining images"]
        == sum(copies_fingerprint(p) == BLANK for p in before.pretrain)
        > 0
    )
    assert (
        a["exemplars with a copy in pretraining"] > 0 and a["models with such an exemplar, by part"]
    )
    assert (
        a["ids naming more than one file (catalog)"]
        == b["ids naming more than one file (catalog)"]
        == 1
    )
    for key in (
        "blank pretraining images",
        "blank exemplars",
        "blank distractors",
        "pretraining images rendered like an exemplar",
        "exemplars with a copy in pretraining",
    ):
        assert b[key] == 0, key
    assert b["models with such an exemplar, by part"] == {}
