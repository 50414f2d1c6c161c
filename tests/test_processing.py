"""TBPSProcessor (call, errors, truncation, training_batch, Auto save/load) and the WordPiece tokenizer."""

import numpy as np
import pytest
import torch
from huggingface_hub.dataclasses import strict
from PIL import Image
from transformers import AutoConfig, AutoProcessor, AutoTokenizer

from tbps_hf.configuration_utils import TBPSConfig
from tbps_hf.processing import PersonImageProcessor, TBPSProcessor, train_wordpiece_tokenizer

CAPTIONS = [
    "A woman in a red coat carrying a black backpack.",
    "The man wears blue jeans, a grey hoodie and white sneakers.",
    "She has long brown hair and holds a yellow umbrella in her left hand.",
    "A young man with short black hair, wearing a green t-shirt and black shorts.",
] * 3


@strict(accept_kwargs=True)
class ToyConfig(TBPSConfig):
    model_type = "tbps_toy_processing_test"
    presets = {"tiny": dict(image_size=(32, 16), vocab_size=200, max_text_length=12, image_mean=(0.4, 0.4, 0.4))}


class ToyProcessor(TBPSProcessor):
    """A method processor with an extra saved setting and a token-level hook (like CFAM's masking)."""

    def __init__(self, image_processor=None, tokenizer=None, max_text_length=100, mask_probability=0.0, **kwargs):
        self.mask_probability = mask_probability
        super().__init__(image_processor, tokenizer, max_text_length=max_text_length, **kwargs)

    def augment_input_ids(self, input_ids, attention_mask, rngs):
        input_ids = input_ids.clone()
        for i, rng in enumerate(rngs):
            draws = torch.from_numpy(rng.random(input_ids.shape[1]))
            special = torch.tensor(
                [t in self.tokenizer.all_special_ids for t in input_ids[i].tolist()], dtype=torch.bool
            )
            input_ids[i][(draws < self.mask_probability) & ~special] = self.tokenizer.mask_token_id
        return input_ids


AutoConfig.register(ToyConfig.model_type, ToyConfig, exist_ok=True)
AutoProcessor.register(ToyConfig, ToyProcessor, exist_ok=True)


@pytest.fixture(scope="module")
def processor():
    return ToyProcessor.from_config(ToyConfig.from_preset("tiny"), captions=CAPTIONS, mask_probability=0.3)


def image(color=(200, 30, 30), size=(20, 50)):
    array = np.zeros((size[1], size[0], 3), np.uint8)
    array[...] = color
    array[: size[1] // 2, : size[0] // 3] = 255 - np.array(color, np.uint8)  # asymmetric, so flips show
    return Image.fromarray(array)


# ---------------------------------------------------------------- tokenizer
def test_wordpiece_tokenizer_roundtrip_no_unk(tmp_path):
    tokenizer = train_wordpiece_tokenizer(CAPTIONS, vocab_size=300)
    assert [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
            tokenizer.mask_token_id] == [0, 1, 2, 3, 4]
    ids = tokenizer("A woman in a red coat")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert tokenizer.unk_token_id not in ids
    words = {w.strip(".,").lower() for c in CAPTIONS for w in c.split()}
    for word in words:
        assert tokenizer.unk_token_id not in tokenizer(word)["input_ids"], word
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a woman in a red coat"
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "the man wears blue jeans and holds a yellow umbrella"
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert reloaded.unk_token_id not in reloaded(text)["input_ids"]
    # A word made of unseen characters is [UNK]: the tokenizer is not vacuous.
    assert tokenizer.unk_token_id in tokenizer("ж")["input_ids"]


def test_wordpiece_tokenizer_ids_are_reproducible():
    # the trainer's own id order follows hash-map iteration; ours must not (reproducible runs rely on it)
    vocabularies = [train_wordpiece_tokenizer(CAPTIONS * 3, vocab_size=5000).get_vocab() for _ in range(4)]
    assert all(v == vocabularies[0] for v in vocabularies)


def test_wordpiece_tokenizer_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        train_wordpiece_tokenizer(["", "  "])
    with pytest.raises(TypeError, match="single string"):
        train_wordpiece_tokenizer("a caption")
    with pytest.raises(ValueError, match="vocab_size"):
        train_wordpiece_tokenizer(CAPTIONS, vocab_size=3)


# ---------------------------------------------------------------- inference call
def test_call_shapes_and_padding(processor):
    out = processor(text=["a woman in a red coat", "a man"], images=[image(), image((0, 0, 255))])
    assert out["input_ids"].shape == (2, 12) and out["attention_mask"].shape == (2, 12)
    assert out["pixel_values"].shape == (2, 3, 32, 16)
    assert out["input_ids"].dtype == torch.long
    short = out["input_ids"][1]
    assert out["attention_mask"][1].tolist() == [1, 1, 1, 1] + [0] * 8  # [CLS] a man [SEP] then padding
    assert short[4:].tolist() == [processor.tokenizer.pad_token_id] * 8
    text_only = processor(text="a man")
    assert set(text_only) == {"input_ids", "attention_mask"}
    images_only = processor(images=image())
    assert set(images_only) == {"pixel_values"}


def test_truncation_keeps_closing_token(processor):
    long_caption = " ".join(["red coat"] * 30)
    ids = processor(text=long_caption)["input_ids"][0].tolist()
    assert len(ids) == 12
    assert ids[0] == processor.tokenizer.cls_token_id and ids[-1] == processor.tokenizer.sep_token_id
    assert processor.tokenizer.pad_token_id not in ids


@pytest.mark.parametrize("queries, index", [(["a man", ""], 1), (["   \t"], 0), ("", 0)])
def test_empty_query_error_names_index(processor, queries, index):
    with pytest.raises(ValueError, match=rf"text\[{index}\] is empty"):
        processor(text=queries)


def test_call_errors(processor):
    with pytest.raises(ValueError, match="text, images"):
        processor()
    with pytest.raises(TypeError, match=r"text\[1\]"):
        processor(text=["ok", 3])


# ---------------------------------------------------------------- training batch
def examples(seed_offset=0):
    return [
        {"image": image((40 * i, 100, 200)), "caption": CAPTIONS[i], "label": i % 2, "person_id": 100 + i,
         "pair_index": i, "seed": 1000 + i + seed_offset}
        for i in range(4)
    ]


def test_training_batch_contents_and_determinism(processor):
    batch = processor.training_batch(examples())
    assert batch["pixel_values"].shape == (4, 3, 32, 16)
    assert batch["input_ids"].shape == (4, 12) and batch["attention_mask"].shape == (4, 12)
    assert batch["person_ids"].dtype == torch.long and batch["person_ids"].tolist() == [0, 1, 0, 1]
    again = processor.training_batch(examples())
    for key in batch:
        assert torch.equal(batch[key], again[key]), key
    # The hook ran: some (non-special) tokens are masked with p = 0.3.
    plain = processor(text=[e["caption"] for e in examples()])["input_ids"]
    assert (batch["input_ids"] == processor.tokenizer.mask_token_id).any()
    assert ((batch["input_ids"] != plain) <= (batch["input_ids"] == processor.tokenizer.mask_token_id)).all()
    # Augmentation ran (views differ from the plain processed images) and depends on the seed.
    unaugmented = processor(images=[e["image"] for e in examples()])["pixel_values"]
    assert not torch.equal(batch["pixel_values"], unaugmented)
    other = processor.training_batch(examples(seed_offset=7))
    assert not torch.equal(other["pixel_values"], batch["pixel_values"])
    # Example i's output depends only on example i: a sub-batch gives the same rows.
    sub = processor.training_batch(examples()[2:])
    assert torch.equal(sub["pixel_values"], batch["pixel_values"][2:])
    assert torch.equal(sub["input_ids"], batch["input_ids"][2:])


def test_training_batch_errors(processor):
    with pytest.raises(ValueError, match="non-empty"):
        processor.training_batch([])
    bad = examples()
    del bad[1]["seed"]
    with pytest.raises(KeyError, match=r"examples\[1\].*seed"):
        processor.training_batch(bad)
    bad = examples()
    bad[2]["caption"] = " "
    with pytest.raises(ValueError, match=r"text\[2\]"):
        processor.training_batch(bad)


# ---------------------------------------------------------------- construction, save / load
def test_from_config_reads_config():
    config = ToyConfig.from_preset("tiny", image_size=(24, 12), max_text_length=9, image_std=(0.3, 0.3, 0.3))
    proc = ToyProcessor.from_config(config, captions=CAPTIONS)
    assert isinstance(proc.image_processor, PersonImageProcessor)
    assert (proc.image_processor.size.height, proc.image_processor.size.width) == (24, 12)
    assert tuple(proc.image_processor.image_std) == (0.3, 0.3, 0.3)
    assert proc.max_text_length == 9
    assert len(proc.tokenizer) <= config.vocab_size
    with pytest.raises(ValueError, match="captions"):
        ToyProcessor.from_config(config)


def test_save_and_autoprocessor_load(processor, tmp_path):
    ToyConfig.from_preset("tiny").save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is ToyProcessor
    assert type(loaded.image_processor) is PersonImageProcessor
    assert loaded.max_text_length == 12 and loaded.mask_probability == 0.3
    inputs = dict(text=["a woman in a red coat", "white sneakers"], images=[image(), image((9, 9, 9))])
    a, b = processor(**inputs), loaded(**inputs)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ta, tb = processor.training_batch(examples()), loaded.training_batch(examples())
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


def test_constructor_errors():
    tokenizer = train_wordpiece_tokenizer(CAPTIONS, vocab_size=100)
    with pytest.raises(ValueError, match="image_processor"):
        TBPSProcessor(None, tokenizer)
    with pytest.raises(ValueError, match="max_text_length"):
        TBPSProcessor(PersonImageProcessor(), tokenizer, max_text_length=1)
