"""`get_image_attention_maps` of each method and the attention grid drawn from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import tbps_hf  # noqa: F401  (registers the methods)
from tbps_hf.modeling_utils import TBPSAttention
from tbps_hf.models import method_names


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


def test_eager_weights_match_sdpa_and_sum_to_one():
    """One attention module: the eager kernel (which returns the weights) and SDPA give the same output."""
    from types import SimpleNamespace

    torch.manual_seed(0)
    outputs = {}
    for implementation in ("eager", "sdpa"):
        torch.manual_seed(0)
        attention = TBPSAttention(SimpleNamespace(_attn_implementation=implementation), 24, 3).eval()
        query, memory = torch.randn(2, 5, 24), torch.randn(2, 7, 24)
        mask = torch.ones(2, 7, dtype=torch.bool)
        mask[1, 4:] = False
        outputs[implementation] = attention(query, memory, key_mask=mask)[0]
    out, weights = attention(query, memory, key_mask=mask, output_attentions=True)  # weights force the eager kernel
    assert weights.shape == (2, 3, 5, 7)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 5))
    assert weights[1, ..., 4:].abs().max() == 0
    assert torch.allclose(outputs["eager"], outputs["sdpa"], atol=1e-5)
    assert torch.allclose(out, outputs["sdpa"], atol=1e-5)


@pytest.mark.parametrize("name", method_names())
def test_maps_are_distributions_from_the_models_own_attention(name):
    """The maps sum to 1 over the grid, depend on the image, and are read from the weights the model's attention
    modules return in its forward (`output_attentions`), not from a replay."""
    model = build(name)
    pixels = torch.randn(3, 3, *model.config.image_size)
    returned = []
    hooks = [
        module.register_forward_hook(lambda m, args, out: returned.append(out[1]))
        for module in model.modules()
        if isinstance(module, TBPSAttention)
    ]
    with torch.no_grad():
        maps = model.get_image_attention_maps(pixels)
    for hook in hooks:
        hook.remove()
    if maps is None:
        return
    assert maps.shape[0] == 3 and maps.dim() == 3
    assert (maps >= 0).all() and torch.allclose(maps.sum((1, 2)), torch.ones(3), atol=1e-5)
    assert not torch.allclose(maps[0], maps[1])  # depends on the image
    if returned:  # methods whose maps come from TBPSAttention (LAIP reads transformers' own layers)
        assert any(w is not None and w.shape[0] == 3 for w in returned)


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
