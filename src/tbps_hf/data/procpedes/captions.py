"""ProcPEDES captions: attributes -> sentences, with synonyms, four styles and three granularities.

A caption is written from :func:`~.attributes.visible_attributes` only, so it never names what the person lacks or
what the view hides. Every caption comes with its *attribute phrases*: the adjective(s) + head noun carrying an
attribute value, exactly as written in the caption (no determiners), e.g. ``"long black hair"``, ``"red t-shirt"``.

Granularity (what is mentioned):
- ``coarse``: gender, upper garment (colour + type), lower garment (colour + type).
- ``medium``: + hair (length + colour), shoes, headwear, bag (colour + type).
- ``fine``: + sleeve length, stripes/logo and their colour, glasses, which shoulder/hand holds a bag, carried items.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .attributes import visible_attributes

GRANULARITIES = ("coarse", "medium", "fine")
STYLES = ("descriptive", "witness", "list", "query")

GENDER_NOUNS = {"man": ("man", "guy", "gentleman"), "woman": ("woman", "lady")}
PRONOUNS = {"man": ("He", "his"), "woman": ("She", "her")}
COLOR_WORDS = {"gray": ("gray", "grey")}
HAIR_COLOR_WORDS = {"blonde": ("blonde", "blond"), "gray": ("gray", "grey")}
HAIR_LENGTH_WORDS = {"short": ("short",), "medium": ("shoulder-length", "medium-length"), "long": ("long",)}
UPPER_NOUNS = {
    "t-shirt": ("t-shirt", "tee"),
    "shirt": ("shirt",),
    "sweater": ("sweater", "jumper", "pullover"),
    "jacket": ("jacket",),
    "coat": ("coat", "overcoat"),
    "hoodie": ("hoodie", "hooded sweatshirt"),
}
SLEEVE_WORDS = {"short": ("short-sleeved",), "long": ("long-sleeved",)}
HEADWEAR_NOUNS = {"cap": ("cap", "baseball cap"), "hat": ("hat", "sun hat"), "beanie": ("beanie",)}
GLASSES_NOUNS = {"glasses": ("glasses", "eyeglasses"), "sunglasses": ("sunglasses",)}
BAG_NOUNS = {
    "backpack": ("backpack", "rucksack"),
    "shoulder bag": ("shoulder bag", "crossbody bag"),
    "handbag": ("handbag",),
}
CARRIED_NOUNS = {"umbrella": ("umbrella",), "bottle": ("bottle", "water bottle")}
SHOE_NOUNS = ("shoes", "sneakers")

#: Words the captions use, by part of speech (a lexicon for taggers that have no model).
ATTRIBUTE_VOCABULARY: dict[str, tuple[str, ...]] = {}  # filled at the bottom of the module


def _syn(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class _Phrases:
    """Collects attribute phrases while a caption is written."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def __call__(self, phrase: str) -> str:
        self.items.append(phrase)
        return phrase


def _parts(v: dict[str, Any], granularity: str, rng: np.random.Generator, ph: _Phrases) -> dict[str, Any]:
    """Noun phrases (with article where countable) for every attribute mentioned at ``granularity``."""
    fine = granularity == "fine"
    medium_up = granularity in ("medium", "fine")
    color = lambda c: _syn(rng, COLOR_WORDS.get(c, (c,)))  # noqa: E731
    he, his = PRONOUNS[v["gender"]]
    p: dict[str, Any] = {"he": he, "his": his}
    p["gender"] = _syn(rng, GENDER_NOUNS[v["gender"]])

    if medium_up:
        length = _syn(rng, HAIR_LENGTH_WORDS[v["hair_length"]])
        p["hair"] = ph(f"{length} {_syn(rng, HAIR_COLOR_WORDS.get(v['hair_color'], (v['hair_color'],)))} hair")

    noun = _syn(rng, UPPER_NOUNS[v["upper_type"]])
    words = [color(v["upper_color"]), noun]
    if fine and v["upper_type"] in ("t-shirt", "shirt"):
        words.insert(0, SLEEVE_WORDS[v["upper_sleeve"]][0])
    upper = ph(" ".join(words))
    p["upper"] = upper
    p["upper_np"] = f"{_article(upper)} {upper}"
    p["pattern"] = ""
    if fine and v["upper_pattern"] == "stripes":
        p["pattern"] = f" with {ph(color(v['upper_pattern_color']) + ' stripes')}"
    elif fine and v["upper_pattern"] == "logo":
        p["pattern"] = f" with {_article(v['upper_pattern_color'])} {ph(color(v['upper_pattern_color']) + ' logo')} on the chest"

    c = color(v["lower_color"])
    if v["lower_type"] == "trousers":
        lower = ph(f"{c} {_syn(rng, ('trousers', 'pants'))}" if v["lower_length"] == "long" else f"{c} shorts")
        p["lower_np"] = lower
    else:
        lower = ph(f"{v['lower_length']} {c} skirt" if medium_up else f"{c} skirt")
        p["lower_np"] = f"{_article(lower)} {lower}"
    p["lower"] = lower

    p["extras"] = []  # (list-style text, sentence-style noun phrase)
    if medium_up:
        shoes = ph(f"{color(v['shoe_color'])} {_syn(rng, SHOE_NOUNS)}")
        p["shoes"] = shoes
        if v["headwear"] not in (None, "none"):
            hw = ph(f"{color(v['headwear_color'])} {_syn(rng, HEADWEAR_NOUNS[v['headwear']])}")
            p["extras"].append((hw, f"{_article(hw)} {hw}"))
    if fine and v["glasses"] not in (None, "none"):
        g = ph(_syn(rng, GLASSES_NOUNS[v["glasses"]]))
        p["extras"].append((g, g))

    p["held"] = []  # (list-style text, sentence-style object)
    if medium_up and v["bag"] not in (None, "none"):
        bag = ph(f"{color(v['bag_color'])} {_syn(rng, BAG_NOUNS[v['bag']])}")
        prep, place = "", ""
        if fine and v["bag"] == "backpack":
            prep, place = "on", "back"
        elif fine and v["bag"] == "shoulder bag":
            prep, place = "over", ph(v["bag_side"] + " shoulder")
        elif fine and v["bag"] == "handbag":
            prep, place = "in", ph(v["bag_side"] + " hand")
        listed = f"{bag} {prep} {place}" if prep else bag
        sentence = f"{_article(bag)} {bag} {prep} {his} {place}" if prep else f"{_article(bag)} {bag}"
        p["held"].append((listed, sentence))
    if fine and v["carried"] not in (None, "none"):
        item = ph(f"{color(v['carried_color'])} {_syn(rng, CARRIED_NOUNS[v['carried']])}")
        side = ph(v["carried_side"] + " hand")
        p["held"].append((f"{item} in {side}", f"{_article(item)} {item} in {his} {side}"))
    return p


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _descriptive(p, granularity, rng) -> str:
    verb = _syn(rng, ("is wearing", "is dressed in", "wears"))
    hair = f" with {p['hair']}" if "hair" in p else ""
    out = [f"{_article(p['gender']).capitalize()} {p['gender']}{hair} {verb} {p['upper_np']}{p['pattern']} and {p['lower_np']}."]
    if "shoes" in p:
        worn = [f"{p['shoes']}"] + [np_ for _, np_ in p["extras"]]
        out.append(f"{p['he']} {_syn(rng, ('has', 'wears', 'also has'))} {_join(worn)}.")
    if p["held"]:
        out.append(f"{p['he']} {_syn(rng, ('carries', 'is carrying', 'has'))} {_join([o for _, o in p['held']])}.")
    return " ".join(out)


def _witness(p, granularity, rng) -> str:
    opener = _syn(rng, ("I saw", "I noticed", "There was"))
    if granularity == "coarse":
        return f"{opener} {_article(p['gender'])} {p['gender']} in {p['upper_np']} and {p['lower_np']}."
    out = [f"{opener} {_article(p['gender'])} {p['gender']} with {p['hair']}."]
    out.append(f"{p['he']} was wearing {p['upper_np']}{p['pattern']} and {p['lower_np']}, with {p['shoes']}.")
    if p["extras"]:
        out.append(f"{p['he']} had {_join([np_ for _, np_ in p['extras']])}.")
    if p["held"]:
        out.append(f"{p['he']} was carrying {_join([o for _, o in p['held']])}.")
    return " ".join(out)


def _list(p, granularity, rng) -> str:
    items = [p["gender"]]
    if "hair" in p:
        items.append(p["hair"])
    items.append(p["upper"] + p["pattern"])
    items.append(p["lower"])
    if "shoes" in p:
        items.append(p["shoes"])
    items += [t for t, _ in p["extras"]] + [t for t, _ in p["held"]]
    prefix = _syn(rng, ("", "Person: ", "Description: "))
    text = ", ".join(items)
    return (prefix + text if prefix else text[0].upper() + text[1:]) + "."


def _query(p, granularity, rng) -> str:
    opener = _syn(rng, ("Looking for", "Find", "Search for"))
    text = f"{opener} {_article(p['gender'])} {p['gender']}"
    if "hair" in p:
        text += f" with {p['hair']}"
    text += f" wearing {p['upper_np']}{p['pattern']} and {p['lower_np']}"
    if "shoes" in p:
        text += f", with {_join([p['shoes']] + [np_ for _, np_ in p['extras']])}"
    if p["held"]:
        text += f", carrying {_join([o for _, o in p['held']])}"
    return text + "."


_WRITERS = {"descriptive": _descriptive, "witness": _witness, "list": _list, "query": _query}


def write_caption(
    attributes: dict[str, Any], view: str, granularity: str, style: str, rng: np.random.Generator
) -> tuple[str, list[str]]:
    """One caption of ``attributes`` as seen from ``view``; returns ``(caption, attribute_phrases)``.

    The phrases are substrings of the caption, in order of writing (the list style writes the gender noun
    capitalized; it is recorded as written).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; expected one of {GRANULARITIES}")
    if style not in STYLES:
        raise ValueError(f"unknown caption style {style!r}; expected one of {STYLES}")
    visible = visible_attributes(attributes, view)
    ph = _Phrases()
    parts = _parts(visible, granularity, rng, ph)
    text = _WRITERS[style](parts, granularity, rng)
    phrases = [parts["gender"] if text.find(parts["gender"]) >= 0 else parts["gender"].capitalize()] + ph.items
    for phrase in phrases:  # a wrong phrase list would silently corrupt the phrase-recovery measurement
        assert phrase in text, (phrase, text)
    return text, phrases


def sample_fine_captions(n: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """``n`` fine captions (all styles, random identities and views) with their attribute noun phrases.

    Each phrase is written exactly as in the caption: adjectives + head noun, no determiners, e.g.
    ``("A woman with long black hair is wearing a red t-shirt ...", ["woman", "long black hair", "red t-shirt", ...])``.
    Used to measure how many attribute phrases a noun-phrase chunker recovers.
    """
    from .attributes import VIEWS, sample_identity

    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        attrs = sample_identity(rng)
        view = VIEWS[int(rng.integers(len(VIEWS)))]
        out.append(write_caption(attrs, view, "fine", STYLES[i % len(STYLES)], rng))
    return out


def _vocabulary() -> dict[str, tuple[str, ...]]:
    from .attributes import COLORS

    adjectives = set(COLORS) | {"grey", "blonde", "blond", "short", "long", "shoulder-length", "medium-length",
                                "short-sleeved", "long-sleeved", "left", "right", "hooded"}
    nouns = {"hair", "stripes", "logo", "chest", "shoulder", "hand", "back", "skirt", "shorts", "trousers", "pants",
             "shoes", "sneakers", "pair"}
    for table in (GENDER_NOUNS, UPPER_NOUNS, HEADWEAR_NOUNS, GLASSES_NOUNS, BAG_NOUNS, CARRIED_NOUNS):
        for words in table.values():
            for w in words:
                nouns.update(x for x in w.split() if x not in adjectives)
    return {"adjectives": tuple(sorted(adjectives)), "nouns": tuple(sorted(nouns))}


ATTRIBUTE_VOCABULARY.update(_vocabulary())
