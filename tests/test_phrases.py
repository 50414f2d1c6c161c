"""Phrase module: tokenizer, phrase split, lexicon tagger, noun phrases, word level, levels, recovery on ProcPEDES."""

import nltk
import pytest

from tbps_hf.processing import phrases
from tbps_hf.processing.phrases import (
    LexiconTagger,
    NLTKTagger,
    PhraseChunker,
    default_tagger,
    noun_phrases,
    nouns_and_adjectives,
    phrase_recovered,
    phrase_recovery,
    split_phrases,
    tokenize,
)


def test_tokenize():
    assert tokenize("A red t-shirt, jeans.") == ["A", "red", "t-shirt", ",", "jeans", "."]
    assert tokenize("The woman's bag doesn't fit") == ["The", "woman", "'s", "bag", "does", "n't", "fit"]
    assert tokenize("") == []
    with pytest.raises(TypeError):
        tokenize(None)


def test_split_phrases():
    assert split_phrases("A man in a coat, black shoes. He carries a bag.,  ") == [
        "A man in a coat", "black shoes", "He carries a bag"
    ]
    assert split_phrases(" , . ") == []


def test_lexicon_tagger_rules():
    tagger = LexiconTagger()
    tags = dict(tagger.tag(tokenize("she wears a sleeveless turquoise sundress and fashionable loafers")))
    assert tags["wears"] == "VBZ" and tags["turquoise"] == "JJ" and tags["a"] == "DT"
    assert tags["sleeveless"] == "JJ"  # lexicon or -less rule
    assert tags["sundress"] == "NN"  # unknown word, default noun
    assert tags["fashionable"] == "JJ"  # -able suffix rule
    assert tags["loafers"] == "NNS"
    assert tagger.word_tag("knee-high") == "JJ"  # hyphenated: reading of the last part
    assert tagger.word_tag("tank-top") == "NN"
    assert tagger.word_tag("three-quarter-sleeved") == "JJ"
    assert tagger.word_tag("42") == "CD"
    # Context: a gerund between a determiner and a noun is a modifier; after "to" a base verb.
    assert dict(tagger.tag(tokenize("a running shoe")))["running"] == "JJ"
    assert dict(tagger.tag(tokenize("he is running")))["running"] == "VBG"
    assert dict(tagger.tag(tokenize("going to zap")))["zap"] == "VB"
    # Extra entries override the shipped lexicon.
    assert LexiconTagger(extra={"Zorbas": "NN"}).word_tag("zorbas") == "NN"


@pytest.mark.parametrize(
    "sentence, expected",
    [
        ("A woman in a red coat carrying a black backpack.", ["woman", "red coat", "black backpack"]),
        (
            "The man wears blue jeans, a grey hoodie and white sneakers.",
            ["man", "blue jeans", "grey hoodie", "white sneakers"],
        ),
        (
            "She has long brown hair and holds a yellow umbrella in her left hand.",
            ["long brown hair", "yellow umbrella", "left hand"],
        ),
        (
            "A young man with short black hair, wearing a black and white striped t-shirt with a red logo.",
            ["young man with short black hair", "black and white striped t-shirt with a red logo"],
        ),
        ("He had glasses and wore a pair of dark running shoes.", ["glasses", "pair of dark running shoes"]),
        (
            "The lady is dressed in a knee-length floral skirt and a short-sleeved light blue blouse.",
            ["lady", "knee-length floral skirt", "short-sleeved light blue blouse"],
        ),
        ("This pedestrian is walking to the left with a phone.", ["pedestrian", "phone"]),
    ],
)
def test_noun_phrases_hand_written(sentence, expected):
    assert noun_phrases(sentence) == expected


def test_noun_phrase_spans_index_tokens():
    chunker = PhraseChunker(tagger=LexiconTagger())
    tokens, spans = chunker.noun_phrase_spans("A girl with a pink bag.")
    assert tokens == ["A", "girl", "with", "a", "pink", "bag", "."]
    assert spans == [(1, 6)]
    assert chunker.noun_phrase_spans("") == ([], [])


def test_nouns_and_adjectives_and_levels():
    caption = "A tall man wears a green jacket, and he is carrying a bag."
    assert nouns_and_adjectives(caption) == ["tall", "man", "green", "jacket", "bag"]
    levels = PhraseChunker(tagger=LexiconTagger()).levels(caption)
    assert levels == {
        "sentence": [caption],
        "phrase": ["A tall man wears a green jacket", "and he is carrying a bag"],
        "word": ["tall", "man", "green", "jacket", "bag"],
    }
    with pytest.raises(ValueError, match="non-empty"):
        PhraseChunker().levels("   ")


def test_tagger_choice(monkeypatch):
    # No nltk data on this machine: the lexicon tagger is the default.
    assert NLTKTagger.is_available() is False
    assert isinstance(default_tagger(), LexiconTagger)
    # When the model is present, nltk.pos_tag is used (simulated: find succeeds, pos_tag is a stub).
    monkeypatch.setattr(nltk.data, "find", lambda resource: resource)
    monkeypatch.setattr(nltk, "pos_tag", lambda tokens: [(t, "NN") for t in tokens])
    tagger = default_tagger()
    assert isinstance(tagger, NLTKTagger)
    assert PhraseChunker(tagger=tagger).noun_phrases("red coat") == ["red coat"]


def test_missing_nltk_model_warns_once(monkeypatch):
    import warnings

    monkeypatch.setattr(phrases, "_warned_no_nltk_model", False)
    monkeypatch.setattr(NLTKTagger, "is_available", classmethod(lambda cls: False))
    with pytest.warns(UserWarning, match="lexicon tagger") as caught:
        default_tagger()
    assert len(caught) == 1 and "averaged_perceptron_tagger" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second fallback in the same process is silent
        assert isinstance(default_tagger(), LexiconTagger)


def test_ivt_processor_saves_which_tagger_made_the_word_level(tmp_path):
    from transformers import AutoProcessor

    import tbps_hf  # noqa: F401  (Auto classes)
    from tbps_hf.models.ivt import IVTConfig, IVTProcessor

    config = IVTConfig.from_preset("tiny", use_mla=True, mla_mode="all")
    processor = IVTProcessor.from_config(config, captions=["a man in a red coat and black shoes"] * 20)
    assert processor.mla_mode == "all" and processor.word_tagger is None
    processor.level_texts("a man in a red coat")
    assert processor.word_tagger == "lexicon"  # no NLTK model on this machine
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert reloaded.word_tagger == "lexicon" and reloaded.mla_mode == "all"


def test_custom_tagger_is_used():
    class AllNouns:
        name = "nouns"

        def tag(self, tokens):
            return [(t, "NN") for t in tokens]

    assert PhraseChunker(tagger=AllNouns()).noun_phrases("is the") == ["is the"]


def test_phrase_recovered_definition():
    assert phrase_recovered("long black hair", ["man with long black hair"])
    assert phrase_recovered("Red T-shirt", ["red t-shirt with logo"])  # lowercased, t-shirt one token
    assert not phrase_recovered("black hair", ["black long hair"])  # must be contiguous
    assert not phrase_recovered("red shirt", ["red shirts"])  # whole tokens, not substrings
    with pytest.raises(ValueError):
        phrase_recovered(" ", ["x"])
    recovery, misses = phrase_recovery([("He wore a red shirt.", ["red shirt", "blue cap"])])
    assert recovery == 0.5 and [m[1] for m in misses] == ["blue cap"]


def test_recovery_on_procpedes_fine_captions():
    from tbps_hf.data.procpedes import sample_fine_captions

    samples = sample_fine_captions(300, seed=123)
    assert len(samples) == 300 and sum(len(p) for _, p in samples) > 1000
    recovery, misses = phrase_recovery(samples, PhraseChunker(tagger=LexiconTagger()))
    assert recovery >= 0.95, misses[:10]


def test_lexicon_is_well_formed():
    lexicon = phrases.load_lexicon()
    assert len(lexicon) > 500
    penn = {"NN", "NNS", "JJ", "DT", "PRP$", "PRP", "IN", "TO", "CC", "VBZ", "VBP", "VBD", "VB", "VBG", "VBN", "MD",
            "RB", "WDT", "WP", "WRB", "CD", "EX"}
    assert set(lexicon.values()) <= penn
    assert all(word == word.lower() for word in lexicon)
