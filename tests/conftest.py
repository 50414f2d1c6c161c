"""Shared fixtures: every registered method's tiny preset with its processor, and training examples, built once
per session (tests read them; the ones that train take copies)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

CAPTIONS = [
    "A woman in a red coat carrying a black backpack. She wears blue jeans, white shoes.",
    "The man wears a grey hoodie, black shorts and white sneakers.",
    "A young girl with long brown hair, a yellow dress and a pink bag.",
    "An old man in a green jacket, brown trousers and black shoes. He holds a white umbrella.",
    "A person in a white shirt and dark pants, carrying a blue bag on the left shoulder.",
    "She has short black hair and wears a purple skirt with grey boots.",
]


def person_images(count: int, size: tuple[int, int] = (32, 64), seed: int = 0) -> list[Image.Image]:
    """Random RGB crops (width, height) with an identity-like colour band, deterministic per seed."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        pixels[: size[1] // 2] = (37 * i) % 256  # upper body colour differs per image
        images.append(Image.fromarray(pixels))
    return images


def training_examples(num_identities: int = 4, per_identity: int = 2, seed: int = 0) -> list[dict]:
    """Examples as `TrainingPairs` gives them (plus the loop's "seed"): identities are contiguous labels."""
    images = person_images(num_identities * per_identity, seed=seed)
    examples = []
    for i, image in enumerate(images):
        label = i // per_identity
        examples.append({"image": image, "caption": CAPTIONS[label % len(CAPTIONS)], "label": label,
                         "person_id": 100 + label, "pair_index": i, "seed": seed * 1000 + i})
    return examples


class BuiltMethod:
    """A registered method at its tiny preset: config (vocab from the trained tokenizer, 4 identities), processor
    and a random-init model in eval mode."""

    def __init__(self, name: str):
        from tbps_hf.models import get_method

        self.name = name
        self.method = get_method(name)
        config = self.method.config_class.from_preset("tiny", num_identities=4)
        self.processor = self.method.processor_class.from_config(config, captions=CAPTIONS * 4)
        config.vocab_size = len(self.processor.tokenizer)
        self.config = config
        torch.manual_seed(0)
        self.model = self.method.model_class(config).eval()

    def fresh_model(self, **kwargs):
        """Another model with the same weights (`kwargs` go to `_from_config`, e.g. attn_implementation)."""
        model = self.method.model_class._from_config(self.config, **kwargs)
        model.load_state_dict(self.model.state_dict())
        return model.eval()


@pytest.fixture(scope="session")
def built_methods():
    cache: dict[str, BuiltMethod] = {}

    def get(name: str) -> BuiltMethod:
        if name not in cache:
            cache[name] = BuiltMethod(name)
        return cache[name]

    return get


@pytest.fixture(autouse=False)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps process-wide singletons: reset them around a test that builds an `Accelerator` (training)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
