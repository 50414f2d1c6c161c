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


# ---------------------------------------------------------------- the transformers processor contract
def test_tokenizer_and_image_arguments_are_routed(processor):
    texts = ["a woman in a red coat", "a man"]
    out = processor(text=texts, images=[image(), image((0, 0, 255))], return_tensors="pt", padding=True, truncation=True)
    longest = len(processor.tokenizer("a woman in a red coat")["input_ids"])
    assert out["input_ids"].shape == (2, longest) < (2, processor.max_text_length)
    assert out["attention_mask"][1].tolist() == [1, 1, 1, 1] + [0] * (longest - 4)
    assert out["pixel_values"].shape == (2, 3, 32, 16)
    # text-only calls honour padding / max_length / pad_to_multiple_of / truncation
    assert processor(text=texts, padding="longest")["input_ids"].shape == (2, longest)
    assert processor(text=texts, padding=True, pad_to_multiple_of=4)["input_ids"].shape[1] % 4 == 0
    assert processor(text=texts, max_length=5)["input_ids"].shape == (2, 5)
    assert processor(text=texts, max_length=5)["input_ids"][0, -1] == processor.tokenizer.sep_token_id
    assert processor(text=texts, text_kwargs={"padding": True})["input_ids"].shape == (2, longest)
    with pytest.raises(ValueError, match=r"text\[0\] has \d+ tokens, more than max_text_length=12"):
        processor(text=[" ".join(["red coat"] * 30)], truncation=False)
    with pytest.raises(ValueError, match=r"max_length must be an int in \[2, max_text_length=12\]"):
        processor(text=texts, max_length=40)
    # image arguments still reach the image processor, whatever else is passed
    a = processor(images=[image()], augment=True, seeds=[3], padding=True)["pixel_values"]
    b = processor(images=[image()], images_kwargs={"augment": True, "seeds": [3]})["pixel_values"]
    assert torch.equal(a, b) and not torch.equal(a, processor(images=[image()])["pixel_values"])
    assert processor(images=[image()], size={"height": 8, "width": 4})["pixel_values"].shape == (1, 3, 8, 4)


@pytest.mark.parametrize("kwargs, named", [({"paddding": True}, "'paddding'"), ({"images_kwargs": {"padding": 1}}, "padding")])
def test_argument_neither_side_knows_is_named(processor, kwargs, named):
    with pytest.raises(TypeError, match=f"unexpected keyword argument.*{named}.*neither the tokenizer"):
        processor(text=["a man"], images=[image()], **kwargs)


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


# ---------------------------------------------------------------- every registered method
def _method_names():
    import tbps_hf.models as registry

    if hasattr(registry, "method_names"):
        return list(registry.method_names())
    return sorted(registry.load_all())


def _flat(features):
    from tbps_hf.modeling_utils import map_features

    tensors = []
    map_features(features, tensors.append)
    return tensors


@pytest.mark.parametrize("method", _method_names())
def test_every_method_pads_to_the_batch_longest_with_the_same_features(method):
    """`processor(text, images, padding=True, truncation=True)` works for every method, and evaluation's
    longest-of-batch padding gives the features of padding to `max_text_length`."""
    from tbps_hf.models import get_method
    from tbps_hf.retrieval import encode_texts

    info = get_method(method)
    config = info.config_class.from_preset("tiny")
    queries = CAPTIONS[:4] + ["a man", "red coat, black bag", " ".join(["grey hoodie"] * 60)]
    proc = info.processor_class.from_config(config, captions=CAPTIONS)
    config.vocab_size = max(int(config.vocab_size), len(proc.tokenizer))
    torch.manual_seed(0)
    model = info.model_class(config).eval()
    both = proc(text=queries, images=[image(), image((0, 0, 255))], return_tensors="pt", padding=True, truncation=True)
    assert both["input_ids"].shape[0] == len(queries) and both["pixel_values"].shape[0] == 2
    full = proc(text=queries[:6])  # training's fixed length
    short = proc(text=queries[:6], padding=True)
    assert short["input_ids"].shape[1] < full["input_ids"].shape[1] == proc.max_text_length
    with torch.no_grad():
        reference = model.get_text_features(full["input_ids"], full["attention_mask"])
        padded = model.get_text_features(short["input_ids"], short["attention_mask"])
    batched = encode_texts(model, proc, queries[:6], batch_size=4, progress=False)  # by-length batches, reordered
    for ref, a, b in zip(_flat(reference), _flat(padded), _flat(batched)):
        torch.testing.assert_close(a, ref, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(b, ref, atol=1e-5, rtol=1e-4)
