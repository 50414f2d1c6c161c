"""The hub metric Space's widget (`tbps push --metric map` uploads this folder as a Gradio Space)."""

from pathlib import Path

import evaluate
from evaluate.utils import launch_gradio_widget

# Load the module file beside this one: the Space's own copy, not a hub lookup.
module = evaluate.load(str(Path(__file__).with_name("map.py")))
launch_gradio_widget(module)
