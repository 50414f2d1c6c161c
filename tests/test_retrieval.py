"""Batched encoding and the FAISS gallery index (tbps_hf.retrieval).

The tiny dual encoders below are real ``TBPSPreTrainedModel`` subclasses (conv image tower + embedding-bag text
tower), so these tests do not depend on any particular method; ``test_evaluation`` / ``test_demo`` reuse them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from PIL import Image, UnidentifiedImageError
from transformers import AutoConfig, AutoModel, AutoProcessor, BatchFeature

from tbps_hf.configuration_utils import TBPSConfig
from tbps_hf.modeling_utils import TBPSPreTrainedModel
from tbps_hf.models import method_names
from tbps_hf.processing import TBPSProcessor
from tbps_hf.retrieval import GalleryIndex, encode_images, encode_texts

WORDS = "a man woman in red blue green black white coat shirt bag backpack shoes jeans carrying with and the".split()


@strict(accept_kwargs=True)
class TinyConfig(TBPSConfig):
    model_type = "tbps-test-tiny"

    hidden_size: int = 16
    structured: bool = False
    image_size: list[int] | tuple[int, int] = (16, 8)
    vocab_size: int = len(WORDS) + 2
    max_text_length: int = 12


@dataclass
class PartFeatures:
    """Structured features like PCC's: a global vector plus P part vectors."""

    global_embeds: torch.Tensor  # [N, d]
    part_embeds: torch.Tensor  # [N, P, d]


class TinyDualEncoder(TBPSPreTrainedModel):
    config_class = TinyConfig

    def __init__(self, config: TinyConfig):
        super().__init__(config)
        d = config.hidden_size
        self.conv = torch.nn.Conv2d(3, d, 3, padding=1)
        self.embed = torch.nn.EmbeddingBag(config.vocab_size, d, mode="sum")
        self.part = torch.nn.Linear(d, 2 * d)
        self.post_init()

    def get_image_features(self, pixel_values):
        maps = F.relu(self.conv(pixel_values))  # [B, d, H, W]
        g = maps.mean(dim=(2, 3))
        if not self.config.structured:
            return g
        parts = torch.stack([h.mean(dim=(2, 3)) for h in maps.chunk(2, dim=2)], dim=1)  # 2 horizontal stripes
        return PartFeatures(g, parts)

    def get_text_features(self, input_ids, attention_mask=None):
        g = self.embed(input_ids, per_sample_weights=attention_mask.float())
        if not self.config.structured:
            return g
        return PartFeatures(g, self.part(g).view(-1, 2, self.config.hidden_size))

    def index_features(self, features):
        if not self.config.structured:
            return super().index_features(features)
        # S = cos(g) + Σ_p cos(part_p): concatenating the normalized vectors gives the same inner product.
        vecs = [F.normalize(features.global_embeds.float(), dim=-1)]
        vecs += [F.normalize(p.float(), dim=-1) for p in features.part_embeds.unbind(1)]
        return torch.cat(vecs, dim=-1)

    def similarity(self, text_features, image_features):
        if not self.config.structured:
            return super().similarity(text_features, image_features)
        # Written independently of index_features: sum of per-part cosine matrices.
        s = F.normalize(text_features.global_embeds, dim=-1) @ F.normalize(image_features.global_embeds, dim=-1).t()
        for p in range(text_features.part_embeds.shape[1]):
            t = F.normalize(text_features.part_embeds[:, p], dim=-1)
            i = F.normalize(image_features.part_embeds[:, p], dim=-1)
            s = s + t @ i.t()
        return s


class TinyProcessor:
    """Word-level tokenizer over WORDS + resize/normalize images (enough for the processor contract)."""

    def __init__(self, config: TinyConfig):
        self.size = tuple(config.image_size)
        self.max_len = config.max_text_length
        self.vocab = {w: i + 2 for i, w in enumerate(WORDS)}  # 0 pad, 1 unk

    def __call__(self, text=None, images=None, return_tensors="pt", padding="max_length", truncation=True):
        out = {}
        if text is not None:
            ids = [[self.vocab.get(w, 1) for w in t.lower().replace(",", " ").split()][: self.max_len] or [1] for t in text]
            length = self.max_len if padding == "max_length" else max(map(len, ids))
            ids = [row + [0] * (length - len(row)) for row in ids]
            out["input_ids"] = torch.tensor(ids)
            out["attention_mask"] = (out["input_ids"] > 0).long()
            out["attention_mask"][:, 0] = 1
        if images is not None:
            h, w = self.size
            arrays = [np.asarray(im.convert("RGB").resize((w, h)), dtype=np.float32) / 127.5 - 1 for im in images]
            out["pixel_values"] = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        return BatchFeature(out)


def make_model(structured: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    config = TinyConfig(structured=structured, similarity_range=(-3.0, 3.0) if structured else (-1.0, 1.0))
    return TinyDualEncoder(config).eval(), TinyProcessor(config)


def random_images(n: int, seed: int = 0, size=(8, 16)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def random_texts(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(2, 9))) for _ in range(n)]


def features_equal(a, b, atol=1e-5):
    if isinstance(a, torch.Tensor):
        return torch.allclose(a, b, atol=atol)
    return all(torch.allclose(getattr(a, f), getattr(b, f), atol=atol) for f in ("global_embeds", "part_embeds"))


@pytest.mark.parametrize("structured", [False, True])
def test_batched_encoding_equals_one_shot(structured):
    model, processor = make_model(structured)
    texts, images = random_texts(11), random_images(9)
    with torch.no_grad():
        inputs = processor(text=texts, images=images)
        t_ref = model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
        i_ref = model.get_image_features(inputs["pixel_values"])
    t = encode_texts(model, processor, texts, batch_size=4, progress=False)
    i = encode_images(model, processor, images, batch_size=4, progress=False)
    assert type(t) is type(t_ref) and type(i) is type(i_ref)
    assert features_equal(t, t_ref) and features_equal(i, i_ref)
    # Any indexable sequence of paths works too (a lazy view need not be a list).
    assert features_equal(encode_images(model, processor, tuple(images), batch_size=100, progress=False), i_ref)


def test_prefetching_threads_keep_order_and_surface_errors(tmp_path):
    import threading

    model, processor = make_model(structured=True)
    images = random_images(23)
    plain = encode_images(model, processor, images, batch_size=4, progress=False, num_workers=0)
    assert features_equal(encode_images(model, processor, images, batch_size=4, progress=False, num_workers=3), plain)
    # a lazy datasets-backed view (decoded on access, from the preparing threads)
    import datasets

    from tbps_hf.data.views import LazyImages

    table = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    lazy = encode_images(model, processor, LazyImages(table), batch_size=4, progress=False, num_workers=3)
    assert features_equal(lazy, plain)
    # an unreadable file in a later batch: the error names it, and the preparing threads are stopped
    good, bad = tmp_path / "ok.png", tmp_path / "broken.png"
    images[0].save(good)
    bad.write_bytes(b"not an image")
    with pytest.raises(UnidentifiedImageError, match="broken.png"):
        encode_images(model, processor, [good] * 9 + [bad] + [good] * 9, batch_size=2, progress=False, num_workers=2)
    assert not [t for t in threading.enumerate() if t.name.startswith("tbps-prepare")]
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        encode_images(model, processor, images, progress=False, num_workers=-1)


def test_encoding_restores_training_mode_and_rejects_empty():
    model, processor = make_model()
    model.train()
    encode_texts(model, processor, ["a man"], progress=False)
    assert model.training
    with pytest.raises(ValueError, match="no texts"):
        encode_texts(model, processor, [], progress=False)
    with pytest.raises(ValueError, match="no images"):
        encode_images(model, processor, [], progress=False)


@pytest.mark.parametrize("structured", [False, True])
def test_faiss_search_equals_bruteforce_similarity_topk(structured):
    model, processor = make_model(structured, seed=1)
    images, texts = random_images(40, seed=2), random_texts(7, seed=3)
    index = GalleryIndex(model, processor, batch_size=16)
    index.add(images[:25], ids=[f"img{i}" for i in range(25)])
    index.add(images[25:], ids=[f"img{i}" for i in range(25, 40)])  # incremental adds keep positions
    scores, indices = index.search(texts, k=5)

    t = encode_texts(model, processor, texts, progress=False)
    i = encode_images(model, processor, images, progress=False)
    sim = model.similarity(t, i)
    ref_scores, ref_indices = sim.topk(5, dim=1)
    np.testing.assert_array_equal(indices, ref_indices.numpy())
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-4)
    assert index.lookup(indices[:1, :2]) == [[f"img{j}" for j in ref_indices[0, :2].tolist()]]
    # Searching with precomputed text features gives the same answer.
    s2, i2 = index.search(t, k=5)
    np.testing.assert_array_equal(i2, indices)
    # k larger than the gallery is clipped.
    assert index.search(texts[:1], k=100)[1].shape == (1, 40)


def test_features_added_directly_and_ivf_option():
    model, processor = make_model(seed=4)
    feats = torch.randn(300, 16)
    queries = torch.randn(5, 16)
    flat = GalleryIndex(model)
    flat.add(feats)
    _, idx = flat.search(queries, k=3)
    np.testing.assert_array_equal(idx, model.similarity(queries, feats).topk(3, dim=1).indices.numpy())
    assert flat.ids[:3] == [0, 1, 2]
    ivf = GalleryIndex(model, ivf_nlist=4, nprobe=4)  # nprobe == nlist → exhaustive, so exact
    ivf.add(feats)
    np.testing.assert_array_equal(ivf.search(queries, k=3)[1], idx)
    with pytest.raises(ValueError, match=r"Could not train the 'IVF50,Flat' index on 10 vectors.*at least as large"):
        GalleryIndex(model, ivf_nlist=50).add(feats[:10])
    with pytest.raises(ValueError, match="empty"):
        GalleryIndex(model).search(queries)
    with pytest.raises(ValueError, match="ids"):
        GalleryIndex(model).add(feats[:3], ids=["a"])


def _clustered(n_ids=60, views=5, dim=32, seed=0):
    """Gallery-shaped vectors: several views per identity around an identity centre (unit norm)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim))
    x = np.repeat(centres, views, axis=0) + 0.4 * rng.standard_normal((n_ids * views, dim))
    q = centres + 0.4 * rng.standard_normal((n_ids, dim))
    norm = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return norm(x), norm(q)


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat", "IVF8,PQ8", "HNSW16", "OPQ8,IVF8,PQ8"])
def test_any_index_factory_trains_saves_and_loads(factory, tmp_path):
    vectors, queries = _clustered()
    exact = GalleryIndex()
    exact.add_vectors(vectors)
    index = GalleryIndex(index_factory=factory, nprobe=8, ef_search=64)
    index.add_vectors(vectors, ids=[f"c{i}.png" for i in range(len(vectors))])  # trained on this block, then added
    scores, found = index.search(queries, k=10)
    _, truth = exact.search(queries, k=10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
    assert recall >= (0.999 if "PQ" not in factory else 0.6), recall
    index.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["gallery.json", "index.faiss"]  # no pickle
    loaded = GalleryIndex.load(tmp_path / "idx")
    assert loaded.index_factory == factory and loaded.ids == index.ids
    for a, b in zip((scores, found), loaded.search(queries, k=10)):
        np.testing.assert_array_equal(a, b)


def test_index_factory_errors_surface_faiss_reason():
    with pytest.raises(ValueError, match=r"FAISS rejected index_factory 'IVF16,Bogus'.*could not parse.*Bogus"):
        GalleryIndex(index_factory="IVF16,Bogus").add_vectors(np.ones((20, 8), np.float32))
    with pytest.raises(ValueError, match="FAISS rejected index_factory 'HNSWx'"):
        GalleryIndex.check_factory("HNSWx")
    with pytest.raises(ValueError, match="index_factory must be"):
        GalleryIndex(index_factory="")


def test_removed_items_are_never_returned(tmp_path):
    vectors, queries = _clustered(n_ids=10, views=3)
    index = GalleryIndex()
    index.add_vectors(vectors)
    _, top = index.search(queries[:1], k=3)
    index.remove(top[0, :2].tolist())
    assert len(index) == 28 and index.ntotal == 30
    scores, again = index.search(queries[:1], k=3)
    assert again[0, 0] == top[0, 2] and not set(again[0]) & set(top[0, :2].tolist())
    assert index.search(queries[:1], k=100)[1].shape == (1, 28)
    index.save(tmp_path / "i")
    assert GalleryIndex.load(tmp_path / "i").removed == set(top[0, :2].tolist())
    with pytest.raises(IndexError):
        index.remove([30])


def test_damaged_saved_index_raises_a_named_error(tmp_path):
    from tbps_hf.retrieval import DamagedIndexError

    index = GalleryIndex()
    index.add_vectors(_clustered(n_ids=4)[0])
    index.save(tmp_path / "i")
    (tmp_path / "i" / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(DamagedIndexError, match="index.faiss is damaged"):
        GalleryIndex.load(tmp_path / "i")
    index.save(tmp_path / "j")
    (tmp_path / "j" / "gallery.json").write_text("{not json")
    with pytest.raises(DamagedIndexError, match="gallery.json is damaged"):
        GalleryIndex.load(tmp_path / "j")


def test_index_save_load_roundtrip(tmp_path):
    model, processor = make_model(structured=True, seed=5)
    images = random_images(12, seed=6)
    index = GalleryIndex(model, processor)
    index.add(images, ids=[f"crops/{i}.png" for i in range(12)])
    index.metadata["model"] = "tiny"
    index.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["gallery.json", "index.faiss"]
    meta = json.loads((tmp_path / "idx" / "gallery.json").read_text())
    assert meta["ids"][3] == "crops/3.png" and meta["ntotal"] == 12

    loaded = GalleryIndex.load(tmp_path / "idx", model, processor)
    assert loaded.ids == index.ids and loaded.metadata == {"model": "tiny"} and len(loaded) == 12
    q = random_texts(3, seed=7)
    for a, b in zip(index.search(q, k=4), loaded.search(q, k=4)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileNotFoundError, match="missing"):
        GalleryIndex.load(tmp_path / "nothing")


def test_folder_index_skips_corrupt_files(tmp_path, caplog):
    model, processor = make_model(seed=8)
    folder = tmp_path / "crops"
    (folder / "sub").mkdir(parents=True)
    images = random_images(5, seed=9)
    images[0].save(folder / "a.png")
    images[1].save(folder / "b.jpg")
    images[2].save(folder / "sub" / "c.bmp")
    images[3].convert("L").save(folder / "d.webp")  # grayscale: converted to RGB
    images[4].save(folder / "e.tiff")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("hello")
    (folder / ".hidden.png").write_bytes(b"")  # hidden files are ignored, not reported

    with caplog.at_level("WARNING"):
        index, report = GalleryIndex.from_folder(folder, model, processor, batch_size=2, progress=False)
    assert report.num_indexed == 5 and report.num_skipped == 2
    assert sorted(p.split("/")[-1] for p in (s.path for s in report.skipped)) == ["broken.jpg", "notes.txt"]
    assert "Skipped 2 unreadable" in caplog.text
    assert index.ids == ["a.png", "b.jpg", "d.webp", "e.tiff", "sub/c.bmp"]
    # The indexed vector of a file equals encoding that file directly.
    direct = encode_images(model, processor, [folder / "sub" / "c.bmp"], progress=False)
    _, idx = index.search(direct, k=1)  # image-to-image: its own vector is the top match
    assert index.ids[idx[0, 0]] == "sub/c.bmp"

    with pytest.raises(FileNotFoundError, match="does not exist"):
        GalleryIndex.from_folder(tmp_path / "missing", model, processor)
    empty = tmp_path / "bad"
    empty.mkdir()
    (empty / "x.jpg").write_bytes(b"junk")
    with pytest.raises(ValueError, match="No readable images"):
        GalleryIndex.from_folder(empty, model, processor, progress=False)


# ----------------------------------------------------------------------------- a saved folder (Auto classes)
class TinyTBPSProcessor(TBPSProcessor):
    """The package's processor base (trained WordPiece tokenizer + PersonImageProcessor) for the tiny model."""


AutoConfig.register(TinyConfig.model_type, TinyConfig, exist_ok=True)
AutoModel.register(TinyConfig, TinyDualEncoder, exist_ok=True)
AutoProcessor.register(TinyConfig, TinyTBPSProcessor, exist_ok=True)

CAPTIONS = [
    "a man in a red coat and black jeans carrying a backpack",
    "a woman wearing a blue shirt with white shoes and a bag",
    "the man has a green shirt, black shoes and a white bag",
    "a woman in a black coat carrying a red bag",
]


def save_tiny_pretrained(path, structured: bool = False, seed: int = 0):
    """A model folder as save_pretrained writes it (config.json, model.safetensors, processor + tokenizer)."""
    torch.manual_seed(seed)
    config = TinyConfig(
        structured=structured, max_text_length=16, similarity_range=(-3.0, 3.0) if structured else (-1.0, 1.0)
    )
    processor = TinyTBPSProcessor.from_config(config, captions=CAPTIONS * 5)
    config.vocab_size = len(processor.tokenizer)
    model = TinyDualEncoder(config)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return model, processor


def test_saved_folder_loads_with_auto_classes(tmp_path):
    from tbps_hf.evaluation import load_model_and_processor

    model, processor = save_tiny_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    loaded, loaded_processor = load_model_and_processor(tmp_path / "m", device="cpu")
    texts = CAPTIONS[:2]
    a = encode_texts(model.eval(), processor, texts, progress=False)
    b = encode_texts(loaded, loaded_processor, texts, progress=False)
    assert torch.allclose(a, b)
    with pytest.raises(FileNotFoundError, match="pass --model"):
        load_model_and_processor(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model_and_processor(tmp_path / "empty")


# ------------------------------------------------------------------------------------- the package's methods
def build_method(name: str, seed: int = 0):
    """A registered method's tiny preset with its processor (tokenizer trained on CAPTIONS), random weights."""
    from tbps_hf import get_method

    method = get_method(name)
    torch.manual_seed(seed)
    config = method.config_class.from_preset("tiny")
    processor = method.processor_class.from_config(config, captions=CAPTIONS * 5)
    config.vocab_size = len(processor.tokenizer)
    return method.model_class(config).eval(), processor


@pytest.mark.parametrize("name", method_names())
def test_index_search_equals_similarity_for_package_methods(name):
    model, processor = build_method(name, seed=2)
    images, texts = random_images(10, seed=3, size=(32, 64)), CAPTIONS
    index = GalleryIndex(model, processor)
    index.add(images)
    scores, indices = index.search(texts, k=4)
    sim = model.similarity(
        encode_texts(model, processor, texts, progress=False), encode_images(model, processor, images, progress=False)
    )
    ref = sim.topk(4, dim=1)
    np.testing.assert_array_equal(indices, ref.indices.numpy())
    np.testing.assert_allclose(scores, ref.values.numpy(), atol=1e-4)
