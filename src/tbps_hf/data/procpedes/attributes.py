"""ProcPEDES identities: the attribute schema, sampling, twins and the visibility model.

An identity is a flat dict (``attribute name -> value``; ``None`` where a dependent attribute does not apply, e.g.
``bag_color`` when ``bag == "none"``). It is stored as JSON in the ``attributes`` column. ``skin_tone`` is a rendering
nuisance that is never described and never changed between twins.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Clothing palette: 12 hues that stay apart at 64x32 pixels (no navy/black or beige/white near-pairs).
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 30),
    "white": (238, 238, 232),
    "gray": (128, 128, 128),
    "red": (214, 32, 32),
    "orange": (246, 132, 18),
    "yellow": (246, 218, 36),
    "green": (34, 150, 56),
    "teal": (0, 176, 170),
    "blue": (36, 84, 222),
    "purple": (128, 44, 168),
    "pink": (246, 128, 190),
    "brown": (104, 56, 18),
}
COLORS = tuple(PALETTE)

HAIR_PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (22, 20, 20),
    "brown": (104, 60, 26),
    "blonde": (232, 200, 96),
    "gray": (168, 168, 168),
    "red": (178, 58, 20),
}
SKIN_TONES = ((246, 214, 186), (226, 178, 140), (186, 130, 90), (141, 94, 62))

GENDERS = ("man", "woman")
HAIR_LENGTHS = ("short", "medium", "long")
HEADWEAR = ("none", "cap", "hat", "beanie")
GLASSES = ("none", "glasses", "sunglasses")
UPPER_TYPES = ("t-shirt", "shirt", "sweater", "jacket", "coat", "hoodie")
SHORT_SLEEVE_TYPES = ("t-shirt", "shirt")  # the others always have long sleeves
SLEEVES = ("short", "long")
PATTERNS = ("plain", "stripes", "logo")
LOWER_TYPES = ("trousers", "skirt")
LOWER_LENGTHS = ("long", "short")
BAGS = ("none", "backpack", "shoulder bag", "handbag")
SIDES = ("left", "right")
CARRIED = ("none", "umbrella", "bottle")

#: Every attribute key, in description order. ``skin_tone`` is last and never described.
ATTRIBUTE_KEYS = (
    "gender",
    "hair_color",
    "hair_length",
    "headwear",
    "headwear_color",
    "glasses",
    "upper_type",
    "upper_color",
    "upper_sleeve",
    "upper_pattern",
    "upper_pattern_color",
    "lower_type",
    "lower_color",
    "lower_length",
    "shoe_color",
    "bag",
    "bag_color",
    "bag_side",
    "carried",
    "carried_color",
    "carried_side",
    "skin_tone",
)
#: Keys a twin may differ in (all described attributes).
TWIN_KEYS = ATTRIBUTE_KEYS[:-1]

_VALUES: dict[str, tuple] = {
    "gender": GENDERS,
    "hair_color": tuple(HAIR_PALETTE),
    "hair_length": HAIR_LENGTHS,
    "headwear": HEADWEAR,
    "headwear_color": COLORS,
    "glasses": GLASSES,
    "upper_type": UPPER_TYPES,
    "upper_color": COLORS,
    "upper_sleeve": SLEEVES,
    "upper_pattern": PATTERNS,
    "upper_pattern_color": COLORS,
    "lower_type": LOWER_TYPES,
    "lower_color": COLORS,
    "lower_length": LOWER_LENGTHS,
    "shoe_color": COLORS,
    "bag": BAGS,
    "bag_color": COLORS,
    "bag_side": SIDES,
    "carried": CARRIED,
    "carried_color": COLORS,
    "carried_side": SIDES,
    "skin_tone": tuple(range(len(SKIN_TONES))),
}

#: Views: ``left`` / ``right`` mean that the person's left / right side faces the camera.
VIEWS = ("front", "back", "left", "right")


def is_valid(a: dict[str, Any]) -> bool:
    """Whether an attribute dict is internally consistent (dependent keys present exactly when they apply)."""
    if set(a) != set(ATTRIBUTE_KEYS):
        return False

    def dep(parent_on: bool, key: str) -> bool:
        return (a[key] in _VALUES[key]) if parent_on else a[key] is None

    for key in ("gender", "hair_color", "hair_length", "headwear", "glasses", "upper_type", "upper_color",
                "upper_sleeve", "upper_pattern", "lower_type", "lower_color", "lower_length", "shoe_color", "bag",
                "carried", "skin_tone"):
        if a[key] not in _VALUES[key]:
            return False
    if a["upper_sleeve"] == "short" and a["upper_type"] not in SHORT_SLEEVE_TYPES:
        return False
    ok = (
        dep(a["headwear"] != "none", "headwear_color")
        and dep(a["upper_pattern"] != "plain", "upper_pattern_color")
        and dep(a["bag"] != "none", "bag_color")
        and dep(a["bag"] in ("shoulder bag", "handbag"), "bag_side")
        and dep(a["carried"] != "none", "carried_color")
        and dep(a["carried"] != "none", "carried_side")
    )
    if not ok:
        return False
    # Contrast rules keep a pattern, or an item held against the body, visible.
    if a["upper_pattern_color"] is not None and a["upper_pattern_color"] == a["upper_color"]:
        return False
    # One hand holds the handbag, the other the carried item.
    if a["bag"] == "handbag" and a["carried"] != "none" and a["carried_side"] == a["bag_side"]:
        return False
    return True


def _pick(rng: np.random.Generator, values, p=None):
    return values[int(rng.choice(len(values), p=p))]


def sample_identity(rng: np.random.Generator) -> dict[str, Any]:
    """Sample one identity with mild gender-dependent priors (all combinations remain possible)."""
    a: dict[str, Any] = {}
    woman = rng.random() < 0.5
    a["gender"] = "woman" if woman else "man"
    a["hair_color"] = _pick(rng, tuple(HAIR_PALETTE), p=[0.34, 0.28, 0.18, 0.1, 0.1])
    a["hair_length"] = _pick(rng, HAIR_LENGTHS, p=[0.2, 0.35, 0.45] if woman else [0.7, 0.2, 0.1])
    a["headwear"] = _pick(rng, HEADWEAR, p=[0.55, 0.17, 0.14, 0.14])
    a["headwear_color"] = None if a["headwear"] == "none" else _pick(rng, COLORS)
    a["glasses"] = _pick(rng, GLASSES, p=[0.6, 0.22, 0.18])
    a["upper_type"] = _pick(rng, UPPER_TYPES, p=[0.26, 0.18, 0.14, 0.16, 0.12, 0.14])
    a["upper_color"] = _pick(rng, COLORS)
    a["upper_sleeve"] = _pick(rng, SLEEVES) if a["upper_type"] in SHORT_SLEEVE_TYPES else "long"
    a["upper_pattern"] = _pick(rng, PATTERNS, p=[0.5, 0.25, 0.25])
    a["upper_pattern_color"] = (
        None if a["upper_pattern"] == "plain" else _pick(rng, tuple(c for c in COLORS if c != a["upper_color"]))
    )
    a["lower_type"] = _pick(rng, LOWER_TYPES, p=[0.55, 0.45] if woman else [0.95, 0.05])
    a["lower_color"] = _pick(rng, COLORS)
    a["lower_length"] = _pick(rng, LOWER_LENGTHS, p=[0.65, 0.35])
    a["shoe_color"] = _pick(rng, COLORS)
    a["bag"] = _pick(rng, BAGS, p=[0.3, 0.28, 0.22, 0.2] if woman else [0.35, 0.35, 0.22, 0.08])
    a["bag_color"] = None if a["bag"] == "none" else _pick(rng, COLORS)
    a["bag_side"] = _pick(rng, SIDES) if a["bag"] in ("shoulder bag", "handbag") else None
    a["carried"] = _pick(rng, CARRIED, p=[0.6, 0.2, 0.2])
    a["carried_color"] = None if a["carried"] == "none" else _pick(rng, COLORS)
    if a["carried"] == "none":
        a["carried_side"] = None
    elif a["bag"] == "handbag":
        a["carried_side"] = "left" if a["bag_side"] == "right" else "right"
    else:
        a["carried_side"] = _pick(rng, SIDES)
    a["skin_tone"] = int(rng.integers(len(SKIN_TONES)))
    a = {k: a[k] for k in ATTRIBUTE_KEYS}
    assert is_valid(a), a
    return a


def make_twin(a: dict[str, Any], rng: np.random.Generator) -> dict[str, Any] | None:
    """A valid identity that differs from ``a`` in exactly one described attribute (``None`` if none found)."""
    keys = [k for k in TWIN_KEYS if a[k] is not None]
    for key in rng.permutation(keys):
        alternatives = [v for v in _VALUES[str(key)] if v != a[key]]
        for value in rng.permutation(len(alternatives)):
            twin = dict(a)
            twin[str(key)] = alternatives[int(value)]
            if is_valid(twin):
                return twin
    return None


def attribute_difference(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two identities."""
    return [k for k in ATTRIBUTE_KEYS if a.get(k) != b.get(k)]


def sample_split_identities(
    rng: np.random.Generator, num: int, twin_fraction: float, taken: set
) -> list[dict[str, Any]]:
    """``num`` unique identities, about ``twin_fraction`` of which belong to a twin pair (both members count).

    ``taken`` holds the frozen attribute sets already used (in any split) and is updated, so identities never repeat.
    Twins stay in the same split. The order is shuffled so that twins do not sit on adjacent ids.
    """

    def key(x: dict[str, Any]):
        return tuple(x[k] for k in ATTRIBUTE_KEYS)

    out: list[dict[str, Any]] = []
    num_pairs = min(int(round(num * twin_fraction / 2.0)), num // 2)
    while len(out) < 2 * num_pairs:
        base = sample_identity(rng)
        if key(base) in taken:
            continue
        twin = make_twin(base, rng)
        if twin is None or key(twin) in taken:
            continue
        taken.add(key(base))
        taken.add(key(twin))
        out.extend([base, twin])
    while len(out) < num:
        ident = sample_identity(rng)
        if key(ident) in taken:
            continue
        taken.add(key(ident))
        out.append(ident)
    order = rng.permutation(len(out))
    return [out[int(i)] for i in order]


def visible_attributes(a: dict[str, Any], view: str) -> dict[str, Any]:
    """The identity with what ``view`` hides set to ``None`` (the visibility model; see docs/procpedes.md).

    - back: glasses and the chest logo are hidden (the stripes stay visible).
    - front: a backpack is hidden (it hangs on the back).
    - side (``left``/``right``: that side of the person faces the camera): the chest logo is hidden; a shoulder bag,
      handbag or carried item on the far side is hidden.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    v = dict(a)

    def hide(*keys: str) -> None:
        for k in keys:
            v[k] = None

    if view == "back":
        hide("glasses")
    if view != "front" and a["upper_pattern"] == "logo":
        hide("upper_pattern", "upper_pattern_color")
    if view == "front" and a["bag"] == "backpack":
        hide("bag", "bag_color", "bag_side")
    if view in ("left", "right"):
        if a["bag"] in ("shoulder bag", "handbag") and a["bag_side"] != view:
            hide("bag", "bag_color", "bag_side")
        if a["carried"] != "none" and a["carried_side"] != view:
            hide("carried", "carried_color", "carried_side")
    return v
