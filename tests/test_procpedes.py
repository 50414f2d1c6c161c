"""ProcPEDES: splits, disjoint ids, determinism, twins, caption honesty, granularity, bad options, interruption.

Caption honesty is checked with this file's own reading of the captions (its own word lists), against the stored
``attributes`` and ``view`` columns, not by calling the caption writer again.
"""

import json
import os
import re
from collections import Counter, defaultdict

import datasets
import numpy as np
import pytest

from tbps_hf.data.procpedes import load_procpedes, sample_fine_captions
from tbps_hf.data.procpedes import builder as builder_module

SMALL = dict(
    num_train_identities=16,
    num_test_identities=10,
    num_test_3c_identities=10,
    images_per_identity=3,
    captions_per_image=3,
    image_size=(64, 32),
    twin_fraction=0.4,
    seed=3,
)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return load_procpedes(cache_dir=str(tmp_path_factory.mktemp("pp_a")), **SMALL)


def _raw(ds):
    """Rows with the image as stored PNG bytes."""
    return ds.cast_column("image", datasets.Image(decode=False)).to_list()


# ------------------------------------------------------------------------------------------------ structure
def test_splits_columns_and_sizes(small):
    assert set(small) == {"train", "test", "test_3c"}
    for split, n_ids in (("train", 16), ("test", 10), ("test_3c", 10)):
        ds = small[split]
        assert ds.num_rows == n_ids * 3
        assert len(set(ds["person_id"])) == n_ids
        for name in ("image", "person_id", "captions", "caption_granularity", "caption_style", "attributes",
                     "file_path"):
            assert name in ds.column_names
        img = ds[0]["image"]
        assert img.size == (32, 64) and img.mode == "RGB"
        for row in ds.select_columns(["captions", "caption_granularity", "caption_style", "file_path"]):
            assert len(row["captions"]) == 3
            assert len(row["caption_granularity"]) == len(row["captions"]) == len(row["caption_style"])
            assert re.fullmatch(rf"{split}/\d{{5}}_\d\.png", row["file_path"])
    assert len(set(small["train"]["file_path"])) == small["train"].num_rows


def test_person_ids_disjoint_and_identities_unique(small):
    ids = {s: set(small[s]["person_id"]) for s in small}
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["test_3c"] and not ids["test"] & ids["test_3c"]
    by_id = {}
    for s in small:
        for pid, attrs in zip(small[s]["person_id"], small[s]["attributes"]):
            assert by_id.setdefault(pid, attrs) == attrs  # one ground truth per identity
    assert len(set(by_id.values())) == len(by_id)  # no two identities look the same


def test_views_vary_within_identity(small):
    views = defaultdict(set)
    for pid, view in zip(small["train"]["person_id"], small["train"]["view"]):
        views[pid].add("side" if view in ("left", "right") else view)
    assert all(len(v) == 3 for v in views.values())  # 3 images: front, back and a side


def test_domains_and_caption_mix(small):
    in_domain = Counter(small["test"]["caption_style"][i][j] for i in range(30) for j in range(3))
    assert set(in_domain) == {"descriptive"}
    mixed_styles = {st for row in small["test_3c"]["caption_style"] for st in row}
    mixed_grans = {g for row in small["test_3c"]["caption_granularity"] for g in row}
    assert mixed_styles == {"descriptive", "witness", "list", "query"} and mixed_grans == {"coarse", "medium", "fine"}
    # the shifted domain is visibly different: its colour histogram is further from train's than test's is
    def histogram(ds):
        arr = np.stack([np.asarray(im) for im in ds["image"]]).reshape(-1, 3) // 32
        h = np.bincount(arr[:, 0] * 64 + arr[:, 1] * 8 + arr[:, 2], minlength=512).astype(float)
        return h / h.sum()

    train, test, shifted = (histogram(small[s]) for s in ("train", "test", "test_3c"))
    assert np.abs(shifted - train).sum() > 2 * np.abs(test - train).sum()


# ------------------------------------------------------------------------------------------------ twins
def _twin_share(ds) -> float:
    attrs = {}
    for pid, a in zip(ds["person_id"], ds["attributes"]):
        attrs[pid] = json.loads(a)
    keys = list(next(iter(attrs.values())))
    # two identities differ in exactly one described key <=> they agree on everything but that key (and are not
    # identical); group by "all keys but k" for each k instead of comparing all pairs
    has_twin = set()
    for k in keys:
        if k == "skin_tone":
            continue
        groups = defaultdict(list)
        for pid, a in attrs.items():
            groups[tuple(str(a[x]) for x in keys if x != k)].append(pid)
        for members in groups.values():
            if len({str(attrs[m][k]) for m in members}) > 1:
                has_twin.update(members)
    ids = sorted(attrs)
    return len(has_twin) / len(ids)


def test_twins(small, tmp_path):
    assert _twin_share(small["test"]) >= 0.2
    assert _twin_share(small["train"]) >= 0.2
    # the default options as well (only identities are planned here; no images rendered)
    plan = builder_module.plan_identities(builder_module.ProcPedesConfig(name="t"))
    for split in ("train", "test", "test_3c"):
        rows = {"person_id": [p for p, _ in plan[split]], "attributes": [json.dumps(a) for _, a in plan[split]]}
        assert _twin_share(rows) >= 0.2, split


# ------------------------------------------------------------------------------------------------ caption honesty
COLORS = {"black", "white", "gray", "red", "orange", "yellow", "green", "teal", "blue", "purple", "pink", "brown"}
SPELLING = {"grey": "gray", "blond": "blonde"}
GENDER = {"man": "man", "guy": "man", "gentleman": "man", "woman": "woman", "lady": "woman"}
UPPER = {"t-shirt": "t-shirt", "tee": "t-shirt", "shirt": "shirt", "sweater": "sweater", "jumper": "sweater",
         "pullover": "sweater", "jacket": "jacket", "coat": "coat", "overcoat": "coat", "hoodie": "hoodie",
         "sweatshirt": "hoodie"}
HEADWEAR = {"cap": "cap", "hat": "hat", "beanie": "beanie"}
BAG = {"backpack": "backpack", "rucksack": "backpack", "handbag": "handbag"}
CARRIED = {"umbrella": "umbrella", "bottle": "bottle"}
MODIFIERS = COLORS | {"grey", "blond", "blonde", "short", "long", "shoulder-length", "medium-length",
                      "short-sleeved", "long-sleeved", "hooded", "baseball", "sun", "water", "shoulder", "crossbody"}
FUNCTION_WORDS = {"a", "an", "the", "with", "and", "is", "wearing", "dressed", "in", "wears", "he", "she", "his",
                  "her", "has", "also", "carries", "carrying", "i", "saw", "noticed", "there", "was", "had", "on",
                  "chest", "back", "over", "hand", "left", "right", "person", "description", "looking", "for",
                  "find", "search", "hair", "stripes", "logo", "shoes", "sneakers", "trousers", "pants", "shorts",
                  "skirt", "glasses", "eyeglasses", "sunglasses", "bag", "shoulder"}
KNOWN = FUNCTION_WORDS | MODIFIERS | set(GENDER) | set(UPPER) | set(HEADWEAR) | set(BAG) | set(CARRIED)


def _norm(w):
    return SPELLING.get(w, w)


def _modifiers(tokens, i):
    """Modifier words directly before token i (walking back over adjectives and compound nouns)."""
    out = []
    j = i - 1
    while j >= 0 and tokens[j] in MODIFIERS:
        out.append(_norm(tokens[j]))
        j -= 1
    return out


def _color_before(tokens, i):
    colors = [m for m in _modifiers(tokens, i) if m in COLORS or m == "blonde"]
    assert len(colors) == 1, (tokens, i)
    return colors[0]


def check_caption(caption, a, view):
    """Raise AssertionError if the caption names anything the person lacks or the view hides."""
    hidden_back = view == "back"
    side = view if view in ("left", "right") else None
    text = caption.lower()
    tokens = re.findall(r"[a-z][a-z\-]*", text)
    unknown = set(tokens) - KNOWN
    assert not unknown, f"caption uses words this checker cannot verify: {unknown} in {caption!r}"
    mentioned = set()
    for i, t in enumerate(tokens):
        mods = _modifiers(tokens, i)
        if t in GENDER and t != "back":
            assert GENDER[t] == a["gender"], caption
            mentioned.add("gender")
        elif t == "hair":
            lengths = {"short": "short", "long": "long", "shoulder-length": "medium", "medium-length": "medium"}
            assert [lengths[m] for m in mods if m in lengths] == [a["hair_length"]], caption
            assert _color_before(tokens, i) == a["hair_color"], caption
        elif t in UPPER and not (t == "shirt" and i > 0 and tokens[i - 1] == "t"):
            assert UPPER[t] == a["upper_type"] and _color_before(tokens, i) == a["upper_color"], caption
            if t == "sweatshirt":
                assert tokens[i - 1] == "hooded"
            for m in mods:
                if m.endswith("-sleeved"):
                    assert m == a["upper_sleeve"] + "-sleeved", caption
        elif t == "stripes":
            assert a["upper_pattern"] == "stripes" and _color_before(tokens, i) == a["upper_pattern_color"], caption
        elif t == "logo":
            assert a["upper_pattern"] == "logo" and view == "front", caption
            assert _color_before(tokens, i) == a["upper_pattern_color"], caption
        elif t in ("trousers", "pants", "shorts", "skirt"):
            assert _color_before(tokens, i) == a["lower_color"], caption
            if t == "skirt":
                assert a["lower_type"] == "skirt", caption
                assert {"short", "long"} & set(mods) <= {a["lower_length"]}, caption
            else:
                assert a["lower_type"] == "trousers", caption
                assert a["lower_length"] == ("short" if t == "shorts" else "long"), caption
        elif t in ("shoes", "sneakers"):
            assert _color_before(tokens, i) == a["shoe_color"], caption
        elif t in HEADWEAR:
            assert HEADWEAR[t] == a["headwear"] and _color_before(tokens, i) == a["headwear_color"], caption
        elif t in ("glasses", "eyeglasses", "sunglasses"):
            assert not hidden_back, caption
            assert a["glasses"] == ("sunglasses" if t == "sunglasses" else "glasses"), caption
        elif t in BAG or (t == "bag" and tokens[i - 1] in ("shoulder", "crossbody")):
            kind = BAG.get(t, "shoulder bag")
            assert a["bag"] == kind and _color_before(tokens, i) == a["bag_color"], caption
            assert not (kind == "backpack" and view == "front"), caption
            assert side is None or kind == "backpack" or a["bag_side"] == side, caption
            mentioned.add("bag")
        elif t in CARRIED:
            assert a["carried"] == CARRIED[t] and _color_before(tokens, i) == a["carried_color"], caption
            assert side is None or a["carried_side"] == side, caption
        elif t == "shoulder" and i + 1 < len(tokens) and tokens[i + 1] == "bag":
            continue
        elif t == "shoulder":
            assert tokens[i - 1] == a["bag_side"] and a["bag"] == "shoulder bag", caption
        elif t == "hand":
            holder = re.search(rf"(handbag|umbrella|bottle) in (?:his |her )?{tokens[i - 1]} hand", text)
            assert holder, caption
            expected = a["bag_side"] if holder.group(1) == "handbag" else a["carried_side"]
            assert tokens[i - 1] == expected, caption
    assert "gender" in mentioned, caption


def test_checker_catches_lies():
    a = {"gender": "woman", "hair_color": "black", "hair_length": "long", "headwear": "none", "headwear_color": None,
         "glasses": "sunglasses", "upper_type": "t-shirt", "upper_color": "red", "upper_sleeve": "short",
         "upper_pattern": "logo", "upper_pattern_color": "white", "lower_type": "trousers", "lower_color": "blue",
         "lower_length": "long", "shoe_color": "white", "bag": "backpack", "bag_color": "black", "bag_side": None,
         "carried": "none", "carried_color": None, "carried_side": None, "skin_tone": 0}
    check_caption("A woman in a red t-shirt with a white logo on the chest and blue pants.", a, "front")
    for lie, view in [
        ("A woman in a blue t-shirt and blue pants.", "front"),  # wrong colour
        ("A woman in a red t-shirt and blue pants, with sunglasses.", "back"),  # hidden by the view
        ("A woman in a red t-shirt and blue pants, carrying a black backpack.", "front"),  # hidden by the view
        ("A woman in a red t-shirt with a white logo on the chest and blue pants.", "left"),  # logo seen from the side
        ("A woman in a red t-shirt and blue pants, with a red cap.", "front"),  # she has no cap
        ("A man in a red t-shirt and blue pants.", "front"),
    ]:
        with pytest.raises(AssertionError):
            check_caption(lie, a, view)


def test_caption_honesty(small):
    n = 0
    for split in small:
        ds = small[split].select_columns(["captions", "attributes", "view"])
        for row in ds:
            a = json.loads(row["attributes"])
            for caption in row["captions"]:
                check_caption(caption, a, row["view"])
                n += 1
    assert n == (16 + 10 + 10) * 3 * 3


def test_granularity_lengths(small):
    words = defaultdict(list)
    for split in small:
        for caps, grans in zip(small[split]["captions"], small[split]["caption_granularity"]):
            for c, g in zip(caps, grans):
                words[g].append(len(c.split()))
    assert set(words) == {"coarse", "medium", "fine"}
    coarse, medium, fine = (np.mean(words[g]) for g in ("coarse", "medium", "fine"))
    assert fine >= 2 * coarse and coarse < medium < fine, (coarse, medium, fine)


def test_sample_fine_captions_phrases():
    samples = sample_fine_captions(200, seed=1)
    assert len(samples) == 200 and samples == sample_fine_captions(200, seed=1)
    for caption, phrases in samples:
        assert len(phrases) >= 4
        for p in phrases:
            assert p in caption and not p.lower().startswith(("a ", "an ", "the ")), (p, caption)
    assert any("hair" in p for _, ps in samples for p in ps)


# ------------------------------------------------------------------------------------------------ caching / determinism
def test_determinism_across_cache_dirs(small, tmp_path):
    again = load_procpedes(cache_dir=str(tmp_path / "b"), **SMALL)
    for split in small:
        assert _raw(small[split]) == _raw(again[split])


def test_options_do_not_collide(small, tmp_path):
    cache = str(tmp_path / "c")
    a = load_procpedes(cache_dir=cache, **SMALL)
    b = load_procpedes(cache_dir=cache, **{**SMALL, "seed": 4})
    c = load_procpedes(cache_dir=cache, **{**SMALL, "images_per_identity": 2})
    assert a["test"]["attributes"] != b["test"]["attributes"]
    assert c["test"].num_rows == 20 and a["test"].num_rows == 30
    assert len(os.listdir(os.path.join(cache, "procpedes"))) == 3
    assert _raw(load_procpedes(cache_dir=cache, **SMALL)["test"]) == _raw(small["test"])


def test_interrupted_generation_is_not_trusted(small, tmp_path, monkeypatch):
    cache = str(tmp_path / "d")
    real = builder_module.render_person
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 60:  # inside the test split
            raise RuntimeError("simulated crash during generation")
        return real(*args, **kwargs)

    monkeypatch.setattr(builder_module, "render_person", flaky)
    with pytest.raises(datasets.exceptions.DatasetGenerationError) as info:
        load_procpedes(cache_dir=cache, **SMALL)
    assert "simulated crash" in str(info.value.__cause__)
    # nothing that looks finished was left behind (train was complete, test was not)
    for root, _, files in os.walk(cache):
        assert "dataset_info.json" not in files or ".incomplete" in root, root
    monkeypatch.setattr(builder_module, "render_person", real)
    again = load_procpedes(cache_dir=cache, **SMALL)
    for split in small:
        assert _raw(again[split]) == _raw(small[split])


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_ids": 5}, "num_ids"),
        ({"num_train_identities": -1}, "num_train_identities"),
        ({"images_per_identity": 0}, "images_per_identity"),
        ({"num_test_identities": 2.5}, "num_test_identities"),
        ({"captions_per_image": 1}, "captions_per_image"),
        ({"image_size": (64,)}, "image_size"),
        ({"image_size": (8, 4)}, "image_size"),
        ({"twin_fraction": 1.5}, "twin_fraction"),
        ({"seed": -3}, "seed"),
    ],
)
def test_bad_options(options, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        load_procpedes(cache_dir=str(tmp_path), **options)


def test_unknown_option_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="num_train_identities"):
        load_procpedes(cache_dir=str(tmp_path), num_ids=5)


def test_unwritable_cache_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="a_file"):
        load_procpedes(cache_dir=str(blocker / "cache"), **SMALL)


def test_preview_writes_png(tmp_path):
    from PIL import Image

    from tbps_hf.data.procpedes.preview import main

    out = tmp_path / "grid.png"
    main(["--out", str(out), "--image_size", "64", "32"])
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 500 and im.size[1] > 500
