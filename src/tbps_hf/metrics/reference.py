"""Slow, obviously-correct implementations used by the tests and the benchmark (not for normal use).

- ``reference_retrieval_metrics``: one query at a time, a full stable sort, the definitions written out literally.
- ``argsort_retrieval_metrics``: the usual vectorized implementation (a full stable argsort of every row); the
  speed baseline of ``benchmarks/metrics.py``.
- ``ufinebench_script_msd``: re-implements the *behaviour* of the public UFineBench ``mSD_Calculator.py``
  (which multiplies a rank-ordered positive mask with gallery-ordered similarities), only to show in the metric
  card and the benchmark how its numbers differ from the definition and depend on gallery order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def reference_retrieval_metrics(
    similarity, query_ids, gallery_ids, ks: Sequence[int] = (1, 5, 10), similarity_range=(-1.0, 1.0)
) -> dict:
    """The definitions of DESIGN.md, literally, one query at a time (float64)."""
    sim = _np(similarity).astype(np.float64)
    qids, gids = _np(query_ids), _np(gallery_ids)
    lo, hi = similarity_range
    num_gallery = sim.shape[1]
    firsts, aps, inps, sds, kept = [], [], [], [], []
    for qi in range(sim.shape[0]):
        row = sim[qi]
        is_pos = gids == qids[qi]
        if not is_pos.any():
            continue
        kept.append(qi)
        # rank order: descending similarity, ties by lower gallery index
        order = sorted(range(num_gallery), key=lambda g: (-row[g], g))
        pos_in_order = is_pos[order]
        ranks = [i + 1 for i, p in enumerate(pos_in_order) if p]  # j_1 < j_2 < ...
        n = len(ranks)
        firsts.append(ranks[0])
        aps.append(sum((k + 1) / j for k, j in enumerate(ranks)) / n)
        inps.append(n / ranks[-1])
        s = np.clip((row[order] - lo) / (hi - lo), 0.0, 1.0)  # normalized, in rank order
        pos_mean = s[pos_in_order].mean()
        if n == num_gallery:
            pnr = 1.0
        else:
            neg_mean = s[~pos_in_order].mean()
            x = pos_mean / neg_mean if neg_mean > 0 else (math.inf if pos_mean > 0 else 0.0)
            pnr = 1.0 - math.exp(-x)
        terms = []
        for j in ranks:
            num = sum(s[i] for i in range(j) if pos_in_order[i])
            den = sum(s[i] for i in range(j))
            terms.append(num / den if den > 0 else 0.0)
        sds.append(pnr * sum(terms) / n)
    if not kept:
        raise ValueError("no query has a positive")
    firsts = np.array(firsts)
    out = {f"R@{k}": float(np.mean(firsts <= k) * 100) for k in ks}
    out.update(mAP=float(np.mean(aps) * 100), mINP=float(np.mean(inps) * 100), mSD=float(np.mean(sds) * 100))
    out.update(num_queries=len(kept), num_skipped_queries=sim.shape[0] - len(kept))
    out["per_query"] = {
        "query_index": np.array(kept),
        "first_positive_rank": firsts,
        "ap": np.array(aps),
        "inp": np.array(inps),
        "sd": np.array(sds),
    }
    return out


def argsort_retrieval_metrics(
    similarity: torch.Tensor, query_ids, gallery_ids, ks: Sequence[int] = (1, 5, 10), similarity_range=(-1.0, 1.0)
) -> dict:
    """Same definitions via a full stable argsort of each row (the common vectorized approach)."""
    sim = torch.as_tensor(similarity)
    qids, gids = torch.as_tensor(_np(query_ids)), torch.as_tensor(_np(gallery_ids))
    lo, hi = similarity_range
    order = torch.sort(sim, dim=1, descending=True, stable=True).indices
    matches = gids[order] == qids[:, None]  # [Q, G] in rank order
    n = matches.sum(1)
    keep = n > 0
    matches, order, n = matches[keep], order[keep], n[keep].double()
    s = ((sim[keep].double() - lo) / (hi - lo)).clamp(0, 1).gather(1, order)  # rank order
    m = matches.double()
    cum_pos = m.cumsum(1)
    rank = torch.arange(1, sim.shape[1] + 1, dtype=torch.float64)
    first = matches.double().argmax(1) + 1
    ap = (cum_pos / rank * m).sum(1) / n
    last = sim.shape[1] - matches.flip(1).double().argmax(1)
    inp = n / last
    pos_sum = (s * m).sum(1)
    neg_n = sim.shape[1] - n
    neg_mean = (s.sum(1) - pos_sum) / neg_n.clamp(min=1)
    pos_mean = pos_sum / n
    x = torch.where(neg_mean > 0, pos_mean / neg_mean.clamp(min=1e-300), torch.where(pos_mean > 0, math.inf, 0.0))
    pnr = torch.where(neg_n > 0, 1 - torch.exp(-x), torch.ones_like(x))
    num, den = (s * m).cumsum(1), s.cumsum(1)
    ratio = torch.where(den > 0, num / den.clamp(min=1e-300), torch.zeros_like(den))
    asp = (ratio * m).sum(1) / n
    sd = pnr * asp
    out = {f"R@{k}": float((first <= k).double().mean() * 100) for k in ks}
    out.update(mAP=float(ap.mean() * 100), mINP=float(inp.mean() * 100), mSD=float(sd.mean() * 100))
    out.update(num_queries=int(keep.sum()), num_skipped_queries=int((~keep).sum()))
    return out


def ufinebench_script_msd(similarity, query_ids, gallery_ids) -> float:
    """mSD (percent) as the public UFineBench ``mSD_Calculator.py`` computes it; NOT the paper's definition.

    Behaviour reproduced (own code): similarities mapped to [0, 1] by s/2 + 0.5; a rank-ordered positive mask
    (row sorted by descending similarity) is multiplied element-wise with the *gallery-ordered* similarity matrix,
    both for the positive/negative means of PNR and for the cumulative sums of ASP. The result therefore changes
    when the gallery columns are permuted, even though the ranking does not. (Sort: stable here, for
    determinism; the script uses torch's default sort.) Every query must have a positive.
    """
    sim = torch.as_tensor(similarity).double() / 2 + 0.5
    qids, gids = torch.as_tensor(_np(query_ids)), torch.as_tensor(_np(gallery_ids))
    order = torch.sort(sim, dim=1, descending=True, stable=True).indices
    matches = (gids[order] == qids[:, None]).double()  # rank order
    num_rel = matches.sum(1)
    masked = sim * matches  # gallery-ordered similarities x rank-ordered mask: the script's mix-up
    pos_mean = masked.sum(1) / num_rel
    neg_mean = (sim.sum(1) - masked.sum(1)) / (sim.shape[1] - num_rel)
    pnr = 1 - torch.exp(-(pos_mean / neg_mean))
    asp = (masked.cumsum(1) / sim.cumsum(1) * matches).sum(1) / num_rel
    return float((pnr * asp).mean() * 100)
