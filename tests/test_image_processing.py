"""PersonImageProcessor: shapes, normalization values, seeded augmentation, input modes, save/load."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

from tbps_hf.processing import PersonImageProcessor

H, W = 32, 16


def make_processor(**kwargs):
    return PersonImageProcessor(size={"height": H, "width": W}, **kwargs)


def gradient_image(height=60, width=24):
    """An image whose pixels all differ, so flips and shifts are visible."""
    y, x = np.mgrid[0:height, 0:width]
    array = np.stack([(x * 10) % 256, (y * 4) % 256, ((x + y) * 3) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(array, mode="RGB")


def test_resize_shape_and_dtype():
    out = make_processor()([gradient_image(100, 40), gradient_image(20, 70)])
    assert out["pixel_values"].shape == (2, 3, H, W)
    assert out["pixel_values"].dtype == torch.float32


def test_normalization_values_exact():
    processor = make_processor(image_mean=(0.2, 0.4, 0.6), image_std=(0.1, 0.2, 0.5))
    image = Image.new("RGB", (W, H), (51, 102, 255))  # already at the target size: no resampling
    pixels = processor(image)["pixel_values"][0]
    expected = [(51 / 255 - 0.2) / 0.1, (102 / 255 - 0.4) / 0.2, (255 / 255 - 0.6) / 0.5]
    for channel, value in enumerate(expected):
        assert torch.allclose(pixels[channel], torch.full((H, W), value), atol=1e-5)


def test_no_augmentation_is_deterministic_and_unseeded():
    processor = make_processor()
    image = gradient_image()
    a = processor(image)["pixel_values"]
    b = processor(image)["pixel_values"]
    assert torch.equal(a, b)


def test_augmentation_same_seed_same_output_and_seeds_differ():
    processor = make_processor()
    images = [gradient_image()] * 8
    a = processor(images, augment=True, seeds=list(range(8)))["pixel_values"]
    b = processor(images, augment=True, seeds=list(range(8)))["pixel_values"]
    assert torch.equal(a, b)
    # Same image, different seeds: the eight views are not all identical.
    distinct = {tuple(v.flatten().tolist()) for v in a}
    assert len(distinct) >= 6
    # The seed of image i alone decides its view: reordering the batch moves the views with it.
    c = processor(images[:3], augment=True, seeds=[2, 0, 1])["pixel_values"]
    assert torch.equal(c[0], a[2]) and torch.equal(c[1], a[0]) and torch.equal(c[2], a[1])


def test_flip_happens_exactly():
    processor = make_processor(flip_probability=1.0, crop_padding=0, erasing_probability=0.0)
    image = gradient_image(H, W)
    plain = processor(image)["pixel_values"]
    flipped = processor(image, augment=True, seeds=[0])["pixel_values"]
    assert torch.equal(flipped, torch.flip(plain, dims=[-1]))


def test_pad_crop_is_a_shift_with_zero_fill():
    processor = make_processor(flip_probability=0.0, crop_padding=4, erasing_probability=0.0, image_mean=(0, 0, 0),
                               image_std=(1, 1, 1))
    image = gradient_image(H, W)
    plain = processor(image)["pixel_values"][0]
    shifted_seen = False
    for seed in range(10):
        view = processor(image, augment=True, seeds=[seed])["pixel_values"][0]
        # The view must equal the plain image shifted by some (dy, dx) in [-4, 4] with zeros coming in.
        match = None
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                padded = torch.nn.functional.pad(plain, (4, 4, 4, 4))
                candidate = padded[:, 4 + dy : 4 + dy + H, 4 + dx : 4 + dx + W]
                if torch.equal(candidate, view):
                    match = (dy, dx)
        assert match is not None, f"seed {seed}: view is not a padded crop"
        shifted_seen |= match != (0, 0)
    assert shifted_seen


def test_random_erasing_writes_a_rectangle_of_erasing_value():
    processor = make_processor(flip_probability=0.0, crop_padding=0, erasing_probability=1.0, erasing_value=-7.0)
    image = gradient_image(H, W)
    plain = processor(image)["pixel_values"][0]
    for seed in range(5):
        view = processor(image, augment=True, seeds=[seed])["pixel_values"][0]
        changed = (view != plain).any(dim=0)
        assert changed.any(), "erasing with probability 1 must erase something"
        rows = torch.nonzero(changed.any(dim=1)).flatten()
        cols = torch.nonzero(changed.any(dim=0)).flatten()
        box = view[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert torch.all(box == -7.0)  # a filled rectangle
        area = box.shape[1] * box.shape[2] / (H * W)
        assert 0.0 < area <= 0.4 + 0.1


def test_accepts_modes_and_arrays():
    processor = make_processor()
    rgb = gradient_image(40, 20)
    inputs = [
        rgb.convert("RGBA"),
        rgb.convert("L"),
        rgb.convert("P"),
        rgb.convert("1"),
        rgb.convert("CMYK"),
        np.asarray(rgb),  # HWC uint8
        np.asarray(rgb).transpose(2, 0, 1),  # CHW
        np.asarray(rgb.convert("L")),  # HW
        np.asarray(rgb).astype(np.float32) / 255.0,  # float in [0, 1]
        torch.from_numpy(np.asarray(rgb).copy()),
    ]
    out = processor(inputs)["pixel_values"]
    assert out.shape == (len(inputs), 3, H, W)
    # Array inputs give the same pixels as the PIL image.
    reference = processor(rgb)["pixel_values"][0]
    for i in (5, 6, 8, 9):
        assert torch.allclose(out[i], reference, atol=1e-5), i
    # Grey modes give three equal channels.
    assert torch.equal(out[1][0], out[1][1]) and torch.equal(out[1][1], out[1][2])


def test_rgba_transparency_composited_on_white():
    processor = make_processor(image_mean=(0, 0, 0), image_std=(1, 1, 1))
    transparent = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    assert torch.allclose(processor(transparent)["pixel_values"], torch.ones(1, 3, H, W))


def test_bmp_roundtrip(tmp_path):
    path = tmp_path / "crop.bmp"
    gradient_image().save(path)
    with Image.open(path) as image:
        assert make_processor()(image)["pixel_values"].shape == (1, 3, H, W)


@pytest.mark.parametrize(
    "bad, message",
    [
        (None, "None"),
        ([], "empty"),
        ([np.zeros((2, 3, 4, 5), np.uint8)], "shape"),
        ([np.zeros((10, 10, 2), np.uint8)], "shape"),
        ([gradient_image(), None], r"images\[1\]"),
        (["not an image"], "unsupported type"),
    ],
)
def test_bad_input_errors(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make_processor()(bad)


def test_seed_errors():
    processor = make_processor()
    with pytest.raises(ValueError, match="seeds has 1"):
        processor([gradient_image()] * 2, augment=True, seeds=[0])
    with pytest.raises(ValueError, match=r"seeds\[0\]"):
        processor([gradient_image()], augment=True, seeds=[-1])
    with pytest.raises(ValueError, match="flip_probability"):
        make_processor(flip_probability=2.0)


def test_save_load_roundtrip(tmp_path):
    processor = make_processor(image_mean=(0.1, 0.2, 0.3), crop_padding=3, erasing_scale=(0.05, 0.2))
    processor.save_pretrained(tmp_path)
    for loaded in (PersonImageProcessor.from_pretrained(tmp_path), AutoImageProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is PersonImageProcessor
        assert loaded.to_dict() == processor.to_dict()
        image = gradient_image()
        a = processor(image, augment=True, seeds=[5])["pixel_values"]
        b = loaded(image, augment=True, seeds=[5])["pixel_values"]
        assert torch.equal(a, b)


def test_per_call_overrides_do_not_mutate():
    processor = make_processor()
    out = processor(gradient_image(), size={"height": 8, "width": 4})
    assert out["pixel_values"].shape == (1, 3, 8, 4)
    assert (processor.size.height, processor.size.width) == (H, W)
    with pytest.raises(TypeError, match="bogus"):
        processor(gradient_image(), bogus=1)


def test_return_tensors_np_and_none():
    processor = make_processor()
    as_np = processor([gradient_image()] * 2, return_tensors="np")["pixel_values"]
    assert isinstance(as_np, np.ndarray) and as_np.shape == (2, 3, H, W)
    as_list = processor([gradient_image()] * 2, return_tensors=None)["pixel_values"]
    assert isinstance(as_list, list) and as_list[0].shape == (3, H, W)
