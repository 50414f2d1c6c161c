"""`get_image_attention_maps` of each method and the attention grid drawn from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import tbps_hf  # noqa: F401  (registers the methods)
from tbps_hf.modeling_utils import attention_probabilities


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(name: str, **overrides):
    method = tbps_hf.get_method(name)
    torch.manual_seed(0)
    return method.model_class(method.config_class.from_preset("tiny", num_identities=4, **overrides)).eval()


def test_attention_probabilities_equal_the_fused_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    weights = attention_probabilities(q, k, mask)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 5))
    assert weights[1, ..., 4:].abs().max() == 0
    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    assert torch.allclose(weights @ v, fused, atol=1e-5)


def _inputs_seen_by(module: torch.nn.Module, call):
    seen = []
    handle = module.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            call()
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("name", ["ivt", "cfam"])
def test_maps_are_recomputed_from_the_real_forward(name):
    """The maps re-run the model up to the attention they read: the keys they use are the ones the model used."""
    model = build(name)
    pixels = torch.randn(3, 3, *model.config.image_size)
    if name == "ivt":
        keys = model.layers[-1].attention.k_proj
        forward = lambda: model.get_image_features(pixels)  # noqa: E731
    else:
        keys = model.granularity_decoder.layers[-1].cross_attn.k_proj
        forward = lambda: model.image_granularity(model.encode_image(pixels)[1])  # noqa: E731
    (in_forward,) = _inputs_seen_by(keys, forward)
    (in_maps,) = _inputs_seen_by(keys, lambda: model.get_image_attention_maps(pixels))
    assert torch.allclose(in_forward, in_maps, atol=1e-6)
    with torch.no_grad():
        maps = model.get_image_attention_maps(pixels)
    assert maps.shape == (3, *model.config.grid_size)
    assert (maps >= 0).all() and torch.allclose(maps.sum((1, 2)), torch.ones(3), atol=1e-5)
    assert not torch.allclose(maps[0], maps[1])  # depends on the image


def test_pcc_map_is_the_foreground_map_of_eq5():
    model = build("pcc")
    batch = 4
    pixels = torch.randn(batch, 3, *model.config.image_size)
    ids = torch.randint(5, 100, (batch, 12))
    with torch.no_grad():
        maps = model.get_image_attention_maps(pixels)
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels, return_loss=False)
    assert torch.allclose(maps, out.image_attention_map)
    assert torch.allclose(maps.sum((1, 2)), torch.ones(batch), atol=1e-5)
    assert build("pcc", use_coarse=False, use_fine=False, embedding_batch_norm=False).get_image_attention_maps(pixels) is None
    assert build("cfam", use_local_sdm=False, use_matcher=False).get_image_attention_maps(pixels) is None


def test_attention_grid_draws_heat_where_the_map_peaks(tmp_path):
    from tbps_hf.visualization import attention_grid

    images = [Image.new("RGB", (32, 64), (128, 128, 128)) for _ in range(2)]
    maps = np.zeros((2, 8, 4), dtype=np.float32)
    maps[0, 0, 0] = 1.0  # top-left cell of the first crop
    maps[1, 7, 3] = 1.0  # bottom-right cell of the second
    path = attention_grid(images, maps, tmp_path / "a.png", titles=["a", "b"], thumb_size=(40, 80))
    with Image.open(path) as im:
        canvas = np.asarray(im.convert("RGB"), dtype=np.int32)
    top = 10 + 26 + 80 + 6  # margin + heading + crop + gap: the overlaid row
    first_hot, first_cold = canvas[top + 2, 10 + 2], canvas[top + 77, 10 + 37]
    assert first_hot[0] - first_hot[2] > 40 and first_cold[2] - first_cold[0] > 40  # red where it peaks, blue elsewhere
    second_hot = canvas[top + 77, 10 + 46 + 37]
    assert second_hot[0] - second_hot[2] > 40
    with pytest.raises(ValueError, match=r"\[I, h, w\] with I = 2"):
        attention_grid(images, maps[:1], tmp_path / "x.png")
    with pytest.raises(ValueError, match="NaN"):
        attention_grid(images, np.full((2, 8, 4), np.nan), tmp_path / "x.png")
