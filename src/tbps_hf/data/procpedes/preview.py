"""Write a grid of ProcPEDES samples with their captions.

    python -m tbps_hf.data.procpedes.preview --out docs/images/procpedes_grid.png

Rows come from the same generator as the dataset (``generate_rows``), so the picture shows real rows: in-domain
images (``test``), a twin pair (differing in one attribute), and shifted-domain ``test_3c`` images with mixed
caption granularity and style.
"""

from __future__ import annotations

import argparse
import io
import textwrap

import numpy as np
from PIL import Image

from .attributes import attribute_difference
from .builder import ProcPedesConfig, generate_rows, plan_identities


def _pick_examples(config: ProcPedesConfig):
    plan = plan_identities(config)
    test = list(generate_rows(config, "test", plan))
    shifted = list(generate_rows(config, "test_3c", plan))
    attrs = {pid: a for pid, a in plan["test"]}
    twins = None
    for i, (p, a) in enumerate(plan["test"]):
        for q, b in plan["test"][i + 1 :]:
            if len(attribute_difference(a, b)) == 1:
                twins = (p, q, attribute_difference(a, b)[0])
                break
        if twins:
            break
    chosen = []
    used = set()
    for row in test:  # two in-domain identities, two views each
        pid = row["person_id"]
        if twins and pid in twins[:2]:
            continue
        if len({r["person_id"] for r in chosen} | {pid}) > 2:
            break
        if sum(r["person_id"] == pid for r in chosen) < 2:
            chosen.append({**row, "label": f"test, id {pid}, {row['view']} view"})
            used.add(pid)
    if twins:
        p, q, key = twins
        for pid in (p, q):
            row = next(r for r in test if r["person_id"] == pid)
            value = attrs[pid][key]
            chosen.append({**row, "label": f"twin: {key} = {value} (id {pid}, {row['view']})"})
    seen = set()
    for row in shifted:
        if row["person_id"] not in seen and len(seen) < 4:
            seen.add(row["person_id"])
            chosen.append({**row, "label": f"test_3c, id {row['person_id']}, {row['view']} view"})
    return chosen


def render_grid(out: str, seed: int = 0, image_size=(128, 64), columns: int = 2) -> str:
    """Render the sample grid to ``out`` (PNG) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = ProcPedesConfig(
        name="preview", num_train_identities=1, num_test_identities=12, num_test_3c_identities=6,
        images_per_identity=3, captions_per_image=2, image_size=tuple(image_size), twin_fraction=0.5, seed=seed,
    )
    examples = _pick_examples(config)
    rows = int(np.ceil(len(examples) / columns))
    fig = plt.figure(figsize=(7.2 * columns, 2.5 * rows), dpi=110)
    for i, ex in enumerate(examples):
        r, c = divmod(i, columns)
        left, bottom = c / columns, 1 - (r + 1) / rows
        ax_img = fig.add_axes((left + 0.005, bottom + 0.02, 0.09 / columns * 2, 1 / rows - 0.04))
        ax_img.imshow(np.asarray(Image.open(io.BytesIO(ex["image"]["bytes"]))), interpolation="nearest")
        ax_img.set_xticks([])
        ax_img.set_yticks([])
        ax_txt = fig.add_axes((left + 0.1 / columns * 2, bottom + 0.02, 0.88 / columns, 1 / rows - 0.04))
        ax_txt.axis("off")
        lines = [""]  # the label is drawn on its own, in bold
        for cap, g, st in zip(ex["captions"], ex["caption_granularity"], ex["caption_style"]):
            lines.append("")
            lines.append(f"[{g} / {st}]")
            lines.extend(textwrap.wrap(cap, 78))
        ax_txt.text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=7.5, family="DejaVu Sans")
        ax_txt.text(0, 1, ex["label"], va="top", ha="left", fontsize=7.5, fontweight="bold", color="#1f3c88")
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Write a ProcPEDES sample grid (PNG) with captions.")
    parser.add_argument("--out", default="procpedes_grid.png", help="output PNG path")
    parser.add_argument("--seed", type=int, default=0, help="generation seed")
    parser.add_argument("--image_size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"))
    args = parser.parse_args(argv)
    print(render_grid(args.out, seed=args.seed, image_size=tuple(args.image_size)))


if __name__ == "__main__":
    main()
