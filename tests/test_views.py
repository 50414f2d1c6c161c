"""TrainingPairs / EvaluationView over one split: contiguous labels, lazy decoding, query order and groups."""

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image as ImageFeature, List, Value
from PIL import Image

from tbps_hf.data import EvaluationView, TrainingPairs
from tbps_hf.data.views import to_pil_rgb


def make_split(tmp_path, person_ids, captions, extra=None, modes=None):
    """A split with image files on disk (Image feature of paths, decoded on access)."""
    paths = []
    for i, _ in enumerate(person_ids):
        mode = (modes or ["RGB"])[i % len(modes or ["RGB"])]
        path = tmp_path / f"{i}.png"
        colour = {"RGB": (i * 20, 1, 2), "L": i * 20, "RGBA": (i * 20, 1, 2, 255)}[mode]
        Image.new(mode, (4, 8), colour).save(path)
        paths.append(str(path))
    data = {"image": paths, "person_id": person_ids, "captions": captions, "file_path": [f"{i}.png" for i in range(len(paths))]}
    features = {"image": ImageFeature(), "person_id": Value("int64"), "captions": List(Value("string")),
                "file_path": Value("string")}
    for key, values in (extra or {}).items():
        data[key] = values
        features[key] = List(Value("string")) if isinstance(values[0], list) else Value("string")
    return Dataset.from_dict(data, features=Features(features)), paths


def test_training_pairs_one_per_caption_with_contiguous_labels(tmp_path):
    ids = [42, 7, 42, 1000, 7]  # gaps and unsorted
    captions = [["a", "b"], ["c"], ["d", "e", "f"], ["g"], ["h", "i"]]
    split, _ = make_split(tmp_path, ids, captions, modes=["RGB", "L", "RGBA"])
    pairs = TrainingPairs(split, seed=3)
    assert isinstance(pairs, torch.utils.data.Dataset)
    assert len(pairs) == 9
    assert pairs.captions == list("abcdefghi")
    assert pairs.num_identities == 3
    assert pairs.label_to_person_id == [7, 42, 1000]  # label = rank of the sorted raw id
    assert pairs.labels == [1, 1, 0, 1, 1, 1, 2, 0, 0]
    item = pairs[6]
    assert item["caption"] == "g" and item["label"] == 2 and item["person_id"] == 1000 and item["pair_index"] == 6
    for i in range(len(pairs)):
        image = pairs[i]["image"]
        assert isinstance(image, Image.Image) and image.mode == "RGB"
    # Pair 3 ("d") belongs to row 2; its pixels are row 2's colour.
    assert np.asarray(pairs[3]["image"])[0, 0].tolist() == [40, 1, 2]


def test_views_do_not_decode_images_up_front(tmp_path):
    split, paths = make_split(tmp_path, [1, 2], [["x"], ["y", "z"]])
    for path in paths:  # the files vanish: building the views must still work, reading an image must not
        (tmp_path / path).unlink()
    pairs = TrainingPairs(split)
    view = EvaluationView(split)
    assert len(pairs) == 3 and len(view.gallery_images) == 2
    with pytest.raises(FileNotFoundError):
        pairs[0]["image"]
    with pytest.raises(FileNotFoundError):
        view.gallery_images[1]


def test_evaluation_view_queries_ids_and_gallery(tmp_path):
    split, _ = make_split(tmp_path, [5, 3, 5], [["p", "q"], ["r"], ["s", "t", "u"]], modes=["L", "RGBA"])
    view = EvaluationView(split)
    assert view.queries == ["p", "q", "r", "s", "t", "u"]
    assert view.gallery_ids.dtype == np.int64 and view.gallery_ids.tolist() == [5, 3, 5]
    assert view.query_ids.dtype == np.int64 and view.query_ids.tolist() == [5, 5, 3, 5, 5, 5]
    assert view.query_image_index.tolist() == [0, 0, 1, 2, 2, 2]
    assert view.query_groups == {}
    images = view.gallery_images[0:3]
    assert len(images) == 3 and all(im.mode == "RGB" for im in images)
    assert np.asarray(view.gallery_images[-1])[0, 0].tolist() == [40, 40, 40]  # grayscale row 2 -> RGB
    with pytest.raises(IndexError):
        view.gallery_images[3]


def test_query_groups_from_source_and_caption_columns(tmp_path):
    split, _ = make_split(tmp_path, [1, 2], [["a", "b"], ["c"]],
                          extra={"source": ["CUHK-PEDES", "UFine6926"]})
    view = EvaluationView(split)
    assert view.query_groups == {"source": ["CUHK-PEDES", "CUHK-PEDES", "UFine6926"]}
    groups = view.group_indices("source")
    assert groups["CUHK-PEDES"].tolist() == [0, 1] and groups["UFine6926"].tolist() == [2]

    split, _ = make_split(tmp_path, [1, 2], [["a", "b"], ["c"]],
                          extra={"caption_granularity": [["coarse", "fine"], ["medium"]],
                                 "caption_style": [["plain", "terse"], ["plain"]]})
    view = EvaluationView(split)
    assert view.query_groups == {"granularity": ["coarse", "fine", "medium"], "style": ["plain", "terse", "plain"]}

    split, _ = make_split(tmp_path, [1], [["a", "b"]], extra={"caption_style": [["only one"]]})
    with pytest.raises(ValueError, match="caption_style"):
        EvaluationView(split)


def test_views_respect_select_and_shuffle(tmp_path):
    split, _ = make_split(tmp_path, [1, 2, 3], [["a"], ["b"], ["c"]])
    subset = split.select([2, 0])
    view = EvaluationView(subset)
    assert view.queries == ["c", "a"] and view.gallery_ids.tolist() == [3, 1]
    assert np.asarray(view.gallery_images[0])[0, 0].tolist() == [40, 1, 2]
    assert TrainingPairs(subset).label_to_person_id == [1, 3]


def test_to_pil_rgb_composites_alpha_on_white():
    rgba = Image.new("RGBA", (2, 2), (0, 0, 0, 0))  # fully transparent black
    assert np.asarray(to_pil_rgb(rgba))[0, 0].tolist() == [255, 255, 255]
    assert to_pil_rgb(Image.new("L", (2, 2), 7)).getpixel((0, 0)) == (7, 7, 7)
    with pytest.raises(TypeError):
        to_pil_rgb(3)


def test_views_on_procpedes_through_the_dispatcher(tmp_path):
    from tbps_hf.data import load_tbps_dataset

    ds = load_tbps_dataset("procpedes", cache_dir=str(tmp_path), num_train_identities=3, num_test_identities=2,
                           num_test_3c_identities=2, images_per_identity=2, image_size=(32, 16))
    pairs = TrainingPairs(ds["train"])
    assert pairs.num_identities == 3 and sorted(set(pairs.labels)) == [0, 1, 2]
    assert pairs[0]["image"].mode == "RGB" and pairs[0]["image"].size == (16, 32)
    view = EvaluationView(ds["test_3c"])
    granularity = ds["test_3c"].to_dict()["caption_granularity"]
    assert view.query_groups["granularity"] == [g for row in granularity for g in row]
    assert set(view.query_groups) == {"granularity", "style"}
    assert len(view.query_groups["style"]) == len(view.queries) == len(view.query_ids)


def test_cached_image_that_vanished_or_broke_says_to_rebuild_the_cache(tmp_path):
    from test_data_builders import make_release

    from tbps_hf.data import load_tbps_dataset
    from tbps_hf.data.views import CachedImageError
    from tbps_hf.errors import TBPSUserError

    data_dir, _, image_paths = make_release(tmp_path, "ufine3c", num_images=4)
    cache = str(tmp_path / "cache")
    view = EvaluationView(load_tbps_dataset("ufine3c", data_dir=str(data_dir), cache_dir=cache)["test"])
    assert view.gallery_images[1].size == Image.open(data_dir / image_paths[1]).size  # the cache is fine
    (data_dir / image_paths[1]).unlink()
    (data_dir / image_paths[2]).write_bytes(b"\xff\xd8 not a jpeg any more")
    with pytest.raises(CachedImageError, match=rf"row 1 \({data_dir / image_paths[1]}\) no longer exists.*--rebuild_cache"):
        view.gallery_images[1]
    with pytest.raises(TBPSUserError, match=r"row 2 .*cannot be read.*force_redownload"):
        view.gallery_images[2]
    # The rebuild the message names: a cold preparation that checks every image again (and can leave them out).
    with pytest.raises(FileNotFoundError, match=str(data_dir / image_paths[1])):
        load_tbps_dataset("ufine3c", data_dir=str(data_dir), cache_dir=cache, download_mode="force_redownload")
    rebuilt = load_tbps_dataset("ufine3c", data_dir=str(data_dir), cache_dir=cache, skip_bad_images=True,
                                download_mode="force_redownload")
    assert len(rebuilt["test"]) == 2 and len(rebuilt.skipped_images) == 2
