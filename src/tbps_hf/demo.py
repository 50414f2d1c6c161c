"""Gradio demo: type a description of a person, get the top-k crops of a gallery folder with their scores.

``tbps demo --model DIR --gallery FOLDER`` and ``python spaces/tbps-demo/app.py ...`` both call :func:`run_demo`;
tests build the app with :func:`build_demo` and query it through ``gradio_client``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

EMPTY_QUERY_MESSAGE = "Please type a description of the person you are looking for, e.g. *a woman in a red coat carrying a black backpack*."
MAX_QUERY_CHARS = 2000


def _model_fingerprint(model_dir: Path) -> str:
    """Changes when the weights or config change, so a saved index built with other weights is not reused."""
    h = hashlib.sha256()
    for name in sorted(p.name for p in model_dir.iterdir() if p.suffix in (".json", ".safetensors")):
        stat = (model_dir / name).stat()
        h.update(f"{name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return h.hexdigest()[:16]


def load_or_build_index(model, processor, model_dir, gallery_dir, index_dir=None, batch_size=64, progress=True):
    """Load a saved index from ``index_dir`` when it was built from the same model and gallery; else build it
    from the gallery folder (and save it to ``index_dir`` when given).

    Returns ``(index, message)`` where the message says what happened (shown in the app).
    """
    from .retrieval import GalleryIndex

    gallery_dir = Path(gallery_dir)
    stamp = {"model": _model_fingerprint(Path(model_dir)), "gallery": str(gallery_dir.resolve())}
    if index_dir is not None and (Path(index_dir) / "index.faiss").is_file():
        index = GalleryIndex.load(index_dir, model, processor, batch_size=batch_size)
        if {k: index.metadata.get(k) for k in stamp} == stamp:
            return index, f"Loaded the saved index of {len(index)} crops from {index_dir}."
        logger.warning("The index in %s was built from another model or gallery; rebuilding it", index_dir)
    index, report = GalleryIndex.from_folder(gallery_dir, model, processor, batch_size=batch_size, progress=progress)
    index.metadata.update(stamp)
    message = f"Indexed {report.num_indexed} crops from {gallery_dir}."
    if report.num_skipped:
        message += f" Skipped {report.num_skipped} unreadable file(s)."
    if index_dir is not None:
        index.save(index_dir)
        message += f" Saved the index to {index_dir}."
    return index, message


def build_demo(
    model_dir: str | os.PathLike,
    gallery_dir: str | os.PathLike,
    index_dir: str | os.PathLike | None = None,
    top_k: int = 10,
    batch_size: int = 64,
    device: str | None = None,
    progress: bool = True,
):
    """Load the model, index the gallery (or load a saved index) and return the ``gr.Blocks`` app.

    The app's endpoint ``/search`` takes ``(query, k)`` and returns ``(gallery, message)``; the gallery items are
    the crops with captions ``"<relative path> · <score>"`` in rank order.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from .evaluation import load_model_and_processor
    from .retrieval import load_image

    model, processor = load_model_and_processor(model_dir, device)
    index, index_message = load_or_build_index(
        model, processor, model_dir, gallery_dir, index_dir, batch_size=batch_size, progress=progress
    )
    gallery_root = Path(gallery_dir)
    max_k = max(1, min(50, len(index)))

    def search(query: str, k: float):
        query = (query or "").strip()
        if not query:
            return [], EMPTY_QUERY_MESSAGE
        note = ""
        if len(query) > MAX_QUERY_CHARS:
            query, note = query[:MAX_QUERY_CHARS], f" (query cut to {MAX_QUERY_CHARS} characters)"
        k = max(1, min(int(k), len(index)))
        scores, indices = index.search([query], k=k)
        items = []
        for score, i in zip(scores[0], indices[0]):
            rel = index.ids[int(i)]
            # Return images, not paths: gradio refuses to serve files outside its allowed folders.
            items.append((load_image(gallery_root / rel), f"{rel} · {float(score):.3f}"))
        return items, f"Top {k} of {len(index)} crops for: *{query}*{note}"

    with gr.Blocks(title="Text-based person search") as demo:
        gr.Markdown(
            "# Text-based person search\n"
            f"Describe a pedestrian; the model ranks the {len(index)} crops of the gallery. {index_message}"
        )
        with gr.Row():
            query = gr.Textbox(
                label="Description", placeholder="a man in a blue shirt and black trousers carrying a backpack",
                scale=4,
            )
            k = gr.Slider(1, max_k, value=min(top_k, max_k), step=1, label="Results", scale=1)
        button = gr.Button("Search", variant="primary")
        message = gr.Markdown()
        results = gr.Gallery(label="Top matches", columns=min(10, max_k), height="auto", object_fit="contain")
        button.click(search, inputs=[query, k], outputs=[results, message], api_name="search")
        query.submit(search, inputs=[query, k], outputs=[results, message], api_name=False)
    demo.index = index  # for callers and tests
    return demo


def configure_demo_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``tbps demo`` / ``spaces/tbps-demo/app.py``."""
    parser.description = "Gradio demo: search a folder of person crops with a free-text description."
    parser.add_argument(
        "--model", default=os.environ.get("TBPS_MODEL"), metavar="DIR",
        help="saved model folder (save_pretrained); default: $TBPS_MODEL",
    )
    parser.add_argument(
        "--gallery", default=os.environ.get("TBPS_GALLERY"), metavar="FOLDER",
        help="folder of person crops (any image format, searched recursively); default: $TBPS_GALLERY",
    )
    parser.add_argument(
        "--index_dir", default=os.environ.get("TBPS_INDEX_DIR"),
        help="save the FAISS index here and reuse it on the next start (rebuilt if the model or gallery changed)",
    )
    parser.add_argument("--top_k", type=int, default=10, help="results shown by default (default 10)")
    parser.add_argument("--batch_size", type=int, default=64, help="images per forward pass while indexing")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 to expose)")
    parser.add_argument("--port", type=int, default=None, help="port (default: gradio's, 7860)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    return parser


def run_demo(args: argparse.Namespace) -> int:
    import sys

    missing = [f"--{name}" for name in ("model", "gallery") if not getattr(args, name)]
    if missing:
        print(f"error: pass {' and '.join(missing)} (or set TBPS_MODEL / TBPS_GALLERY)", file=sys.stderr)
        return 2
    try:
        demo = build_demo(args.model, args.gallery, args.index_dir, args.top_k, args.batch_size, args.device)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = configure_demo_parser(argparse.ArgumentParser(prog="tbps demo"))
    return run_demo(parser.parse_args(argv))


__all__ = ["build_demo", "load_or_build_index", "configure_demo_parser", "run_demo", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
