"""The `evaluate` modules (rank_k, map, msd) and what they share: input features and the call into the core."""

import datasets
import numpy as np

from ..core import retrieval_metrics

# One query per example: its row of G similarities, and its person id.
ROW_FEATURES = datasets.Features(
    {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
)


def metrics_from_rows(predictions, references, gallery_ids, ks=(1, 5, 10), similarity_range=(-1.0, 1.0)) -> dict:
    """Run the metric core on evaluate's row-per-query inputs (all three modules return a subset of this)."""
    if gallery_ids is None:
        raise ValueError("pass gallery_ids=<the person id of each gallery image> to compute()")
    lengths = {len(row) for row in predictions}
    if len(lengths) > 1:
        raise ValueError(f"every prediction row must have one similarity per gallery image; got lengths {sorted(lengths)}")
    similarity = np.asarray(predictions, dtype=np.float64).reshape(len(predictions), -1)
    return retrieval_metrics(
        similarity, np.asarray(references), np.asarray(gallery_ids), ks=ks, similarity_range=similarity_range
    )
