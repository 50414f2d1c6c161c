"""Retrieval metrics for text-to-image person search: R@k, mAP, mINP and mSD (UFineBench §3.4).

Definitions (DESIGN.md → "Metric definitions"; all values in percent):

- rank order per query: descending similarity, ties broken by the lower gallery index (a stable sort);
- R@k: share of queries whose first positive is at rank ≤ k;
- AP = (1/n⁺) Σₖ k / jₖ with jₖ the rank of the k-th positive; INP = n⁺ / j_{n⁺};
- mSD: s' = (s − lo) / (hi − lo); x = mean(s' of positives) / mean(s' of negatives); PNR = 1 − exp(−x);
  ASP = (1/n⁺) Σₖ [Σ_{i≤jₖ} s'ᵢ·pos(i)] / [Σ_{i≤jₖ} s'ᵢ] with the sums taken in rank order; SD = PNR · ASP.

Conventions for the corner cases: a query without a positive is skipped (and counted); a query without a
negative has PNR = 1; mean(s' of negatives) = 0 gives PNR = 1 (PNR = 0 if the positives' mean is 0 too);
an ASP term with Σ_{i≤jₖ} s'ᵢ = 0 is 0. Values within 1e-3 outside ``similarity_range`` are clipped to it.

How it is fast: only the ranks of the positives are needed, never a full sort. Queries are grouped by their
number of positives P; a positive's rank is 1 + (its rank among the positives, known from their scores) + the
number of negatives ranked above it. For each of the P positives, three whole-block passes (``gt`` into a 0/1
float mask, multiply with s − lo, ``eq``) and fast row sums give the number and the s'-sum of the negatives
above it and flag exact ties, which are then resolved by gallery index on the few rows that have them. Everything
is additive over gallery blocks, which is what the streaming variant uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

RANGE_TOLERANCE = 1e-3
# Elements of one [q, g] working block of the dense path (~12 bytes per element per worker: copy, s - lo, mask).
_BLOCK_ELEMENTS = 1 << 20

ArrayLike = Any  # torch.Tensor | np.ndarray | sequence


# ----------------------------------------------------------------------------------------------- input checks
def _as_ids(ids: ArrayLike, name: str) -> np.ndarray:
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one id per row), got shape {tuple(arr.shape)}")
    return arr


def _id_codes(query_ids: np.ndarray, gallery_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary ids (ints, strings) to shared integer codes."""
    try:
        _, inverse = np.unique(np.concatenate([query_ids, gallery_ids]), return_inverse=True)
    except TypeError as err:  # e.g. mixing str and int
        raise ValueError(f"query_ids and gallery_ids must be comparable ids of one type: {err}") from None
    inverse = inverse.reshape(-1)
    return inverse[: len(query_ids)].astype(np.int64), inverse[len(query_ids) :].astype(np.int64)


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks}")
    return ks


def _check_range(similarity_range: Sequence[float]) -> tuple[float, float]:
    if len(similarity_range) != 2:
        raise ValueError(f"similarity_range must be (low, high), got {similarity_range!r}")
    lo, hi = (float(v) for v in similarity_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"similarity_range must be finite with low < high, got {(lo, hi)}")
    return lo, hi


def _as_similarity(similarity: ArrayLike) -> torch.Tensor:
    if isinstance(similarity, np.ndarray):
        similarity = torch.from_numpy(similarity)
    elif not isinstance(similarity, torch.Tensor):
        similarity = torch.as_tensor(np.asarray(similarity, dtype=np.float64))
    similarity = similarity.detach()
    if similarity.ndim != 2:
        raise ValueError(f"similarity must be a 2-D [num_queries, num_gallery] matrix, got shape {tuple(similarity.shape)}")
    if not similarity.is_floating_point():
        similarity = similarity.to(torch.float64)
    elif similarity.dtype in (torch.float16, torch.bfloat16):
        similarity = similarity.float()  # exact: every half value is a float32 value
    return similarity.cpu()


def _check_block(block: torch.Tensor, lo: float, hi: float, row_index: np.ndarray, col_offset: int, name: str) -> bool:
    """Raise on NaN or on values outside [lo, hi] by more than the tolerance; name the offending entry."""
    bmin, bmax = torch.aminmax(block)  # NaN propagates into both
    bad = None
    bmin_v, bmax_v = bmin.item(), bmax.item()
    if torch.isnan(bmin) or torch.isnan(bmax):
        bad = torch.isnan(block)
        what = "NaN"
    elif bmin.item() < lo - RANGE_TOLERANCE or bmax.item() > hi + RANGE_TOLERANCE:
        bad = (block < lo - RANGE_TOLERANCE) | (block > hi + RANGE_TOLERANCE)
        what = "out of range"
    if bad is None:
        return lo <= bmin_v and bmax_v <= hi  # True: no value needs clipping for mSD
    r, c = (int(v) for v in bad.nonzero()[0])
    value = block[r, c].item()
    where = f"(query {int(row_index[r])}, gallery {col_offset + c})"
    if what == "NaN":
        raise ValueError(f"{name} contains NaN at {where}")
    raise ValueError(
        f"{name} value {value!r} at {where} lies outside similarity_range ({lo}, {hi}) by more than "
        f"{RANGE_TOLERANCE}; pass the model's similarity_range (mSD normalizes with it)"
    )


# ------------------------------------------------------------------------------------------------ positives
@dataclass
class _Positives:
    """Gallery indices of each query's positives, grouped by id code (ascending gallery index)."""

    sorted_gallery: np.ndarray  # gallery indices ordered by id code, stable
    start: np.ndarray  # [num_codes] first position of each code in sorted_gallery
    count: np.ndarray  # [num_codes]

    @classmethod
    def build(cls, gallery_codes: np.ndarray, num_codes: int) -> "_Positives":
        order = np.argsort(gallery_codes, kind="stable")
        count = np.bincount(gallery_codes, minlength=num_codes)
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        return cls(order.astype(np.int64), start, count)

    def padded(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[q, P] gallery indices (pad 0) and validity mask for the queries with these id codes."""
        n = self.count[codes]
        width = int(n.max()) if len(n) else 0
        offs = np.arange(width)
        valid = offs[None, :] < n[:, None]
        idx = np.where(valid, self.start[codes][:, None] + offs[None, :], 0)
        return np.where(valid, self.sorted_gallery[idx], 0), valid


# ------------------------------------------------------------------------------------------------ the kernel
class _QueryBlockState:
    """Accumulates, for one block of queries, the negatives ranked above each positive (count and s'-sum).

    Positives are held in rank order per row (``t`` descending, ties by gallery index), padded with -inf.
    """

    def __init__(self, t: torch.Tensor, pos_idx: torch.Tensor, valid: torch.Tensor, lo: float, hi: float):
        # rank order among the positives: sort by gallery index (already ascending), then stably by score desc
        t = t.masked_fill(~valid, -math.inf)
        order = torch.sort(t, dim=1, descending=True, stable=True).indices
        self.t = t.gather(1, order)  # [q, P] descending
        self.pos_idx = pos_idx.gather(1, order)
        self.valid = valid.gather(1, order)
        self.lo, self.scale = lo, hi - lo
        q, p = self.t.shape
        self.neg_count = torch.zeros(q, p, dtype=torch.float64)
        self.neg_sum = torch.zeros(q, p, dtype=torch.float64)
        self.neg_total = torch.zeros(q, dtype=torch.float64)  # Σ s' over negatives
        self.pos_norm = self.normalize(self.t.double()).masked_fill(~self.valid, 0.0)

    def normalize(self, s: torch.Tensor) -> torch.Tensor:
        return ((s - self.lo) / self.scale).clamp_(0.0, 1.0)

    def add(
        self, block: torch.Tensor, g0: int, pos_rows: torch.Tensor, pos_cols: torch.Tensor, in_range: bool | None = None
    ) -> None:
        """Fold in gallery columns [g0, g0 + block.shape[1]) of these rows; ``block`` may be overwritten.

        ``pos_rows``/``pos_cols`` locate the positives inside the block: they are excluded here (their
        order relative to each other comes from ``t``, so a positive's score is read from one place only).
        """
        q, p = self.t.shape
        if in_range is None:
            bmin, bmax = torch.aminmax(block)
            in_range = bmin.item() >= self.lo and bmax.item() <= self.lo + self.scale
        # shifted = s - lo, clipped to [0, scale], once per block: non-negative terms, so its float32 sums keep
        # their relative precision (sums of raw s would cancel); divided by scale in float64 when accumulated
        shifted = torch.sub(block, self.lo)
        if not in_range:
            shifted.clamp_(0.0, self.scale)  # ranks still use the raw s
        row_sum = shifted.sum(1).double()
        row_sum.index_put_((pos_rows,), -shifted[pos_rows, pos_cols].double(), accumulate=True)
        self.neg_total += row_sum / self.scale
        # positives: below every threshold and equal to none, so every count below is over negatives only
        block[pos_rows, pos_cols] = torch.finfo(block.dtype).min
        thr = self.t.masked_fill(~self.valid, math.inf).to(block.dtype)  # pads: nothing is above them
        count_dtype = torch.float64 if block.shape[1] >= 1 << 24 else None  # float32 counts exact below 2^24
        mask = torch.empty_like(block)  # 0/1 in the block's dtype: its sums are fast, vectorized reductions
        for k in range(p):
            t_k = thr[:, k : k + 1]
            # a few whole-block passes per positive (compare, multiply, compare) instead of a sort or histogram
            count = torch.gt(block, t_k, out=mask).sum(1, dtype=count_dtype).double()
            self.neg_count[:, k] += count
            self.neg_sum[:, k] += mask.mul_(shifted).sum(1).double() / self.scale
            # exact ties with t_k (rare): ranked above that positive only if the gallery index is lower
            tied_rows = torch.eq(block, t_k, out=mask).sum(1).nonzero().squeeze(1)
            if len(tied_rows):
                cols = torch.arange(g0, g0 + block.shape[1])
                hit = (block[tied_rows] == t_k[tied_rows]) & (cols < self.pos_idx[tied_rows, k : k + 1])
                n_hit = hit.sum(1).double()
                self.neg_count[tied_rows, k] += n_hit
                self.neg_sum[tied_rows, k] += n_hit * self.pos_norm[tied_rows, k]

    def finish(self, num_gallery: int) -> dict[str, np.ndarray]:
        n = self.valid.sum(1).double()
        k = torch.arange(self.t.shape[1], dtype=torch.float64)
        ranks = 1.0 + k[None, :] + self.neg_count  # 1-based rank of the k-th positive
        ranks = ranks.masked_fill(~self.valid, 1.0)
        ap = ((k + 1.0)[None, :] / ranks).masked_fill(~self.valid, 0.0).sum(1) / n
        last = ranks.gather(1, (n.long() - 1)[:, None]).squeeze(1)
        inp = n / last
        # mSD
        pos_cum = self.pos_norm.cumsum(1)  # Σ of s' over positives ranked up to k
        denom = pos_cum + self.neg_sum
        terms = torch.where(denom > 0, pos_cum / denom.clamp(min=1e-300), torch.zeros_like(denom))
        asp = terms.masked_fill(~self.valid, 0.0).sum(1) / n
        pos_mean = self.pos_norm.sum(1) / n
        num_neg = num_gallery - n
        neg_mean = self.neg_total / num_neg.clamp(min=1.0)
        x = torch.where(neg_mean > 0, pos_mean / neg_mean.clamp(min=1e-300), torch.where(pos_mean > 0, math.inf, 0.0))
        pnr = torch.where(num_neg > 0, 1.0 - torch.exp(-x), torch.ones_like(x))
        return {
            "first_positive_rank": ranks[:, 0].round().long().numpy(),
            "ap": ap.numpy(),
            "inp": inp.numpy(),
            "sd": (pnr * asp).numpy(),
        }


# ------------------------------------------------------------------------------------------------- driver
BlockFn = Callable[[np.ndarray, int, int], torch.Tensor]  # (query rows, g0, g1) -> [q, g1 - g0]
PositivesFn = Callable[[np.ndarray, np.ndarray, np.ndarray], torch.Tensor]  # (rows, pos_idx [q,P], valid) -> [q,P]


def _run(
    get_block: BlockFn,
    get_positive_scores: PositivesFn,
    query_ids: ArrayLike,
    gallery_ids: ArrayLike,
    num_queries: int,
    num_gallery: int,
    ks: Sequence[int],
    similarity_range: Sequence[float],
    query_block_size: int,
    gallery_block_size: int,
    return_per_query: bool,
    check_blocks: bool,
    name: str,
    all_in_range: bool | None = None,
    progress: bool = False,
    parallel: bool = True,
) -> dict[str, Any]:
    ks = _check_ks(ks)
    lo, hi = _check_range(similarity_range)
    qids, gids = _as_ids(query_ids, "query_ids"), _as_ids(gallery_ids, "gallery_ids")
    if len(qids) != num_queries:
        raise ValueError(f"query_ids has {len(qids)} entries but there are {num_queries} queries ({name} rows)")
    if len(gids) != num_gallery:
        raise ValueError(f"gallery_ids has {len(gids)} entries but there are {num_gallery} gallery items ({name} columns)")
    if num_queries == 0 or num_gallery == 0:
        raise ValueError(f"{name} is empty ({num_queries} queries x {num_gallery} gallery items)")
    qcodes, gcodes = _id_codes(qids, gids)
    positives = _Positives.build(gcodes, int(max(qcodes.max(), gcodes.max())) + 1)
    n_pos = positives.count[qcodes]
    evaluated = np.flatnonzero(n_pos > 0)
    skipped = num_queries - len(evaluated)
    if len(evaluated) == 0:
        raise ValueError(f"none of the {num_queries} queries has a positive (matching id) in the gallery")
    # group queries by positive count: a block's positives then fill [q, P] without padding
    order = evaluated[np.argsort(n_pos[evaluated], kind="stable")]
    group_starts = np.flatnonzero(np.diff(n_pos[order], prepend=-1))
    group_ends = np.append(group_starts[1:], len(order))
    per_query: dict[str, list[np.ndarray]] = {"query_index": [], "first_positive_rank": [], "ap": [], "inp": [], "sd": []}
    blocks = [(b0, min(b0 + query_block_size, e)) for s, e in zip(group_starts, group_ends) for b0 in range(s, e, query_block_size)]
    def fold(bounds: tuple[int, int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        rows = order[bounds[0] : bounds[1]]
        pos_np, valid_np = positives.padded(qcodes[rows])
        pos_idx, valid = torch.from_numpy(pos_np), torch.from_numpy(valid_np)
        t = get_positive_scores(rows, pos_np, valid_np)
        if check_blocks:
            _check_block(t.masked_fill(~valid, lo), lo, hi, rows, 0, name + " (positive pairs)")
        state = _QueryBlockState(t, pos_idx, valid, lo, hi)
        q, p = pos_np.shape
        flat_r = torch.arange(q)[:, None].expand(q, p)[valid]
        flat_c = pos_idx[valid]
        for g0 in range(0, num_gallery, gallery_block_size):
            g1 = min(num_gallery, g0 + gallery_block_size)
            block = get_block(rows, g0, g1)
            in_range = _check_block(block, lo, hi, rows, g0, name) if check_blocks else all_in_range
            inside = (flat_c >= g0) & (flat_c < g1)
            state.add(block, g0, flat_r[inside], flat_c[inside] - g0, in_range)
        return rows, state.finish(num_gallery)

    # Query blocks in parallel, one intra-op thread each: the kernel is many short memory-bound whole-block ops, and
    # a thread barrier per op costs more than it gives (on a busy machine it made the dense case 3-4x slower).
    workers = min(torch.get_num_threads(), len(blocks)) if parallel else 1
    caller_threads = torch.get_num_threads()

    def fold_single_threaded(bounds: tuple[int, int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        torch.set_num_threads(1)  # this worker thread only (per-thread with OpenMP / MKL)
        return fold(bounds)

    with ThreadPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        results = pool.map(fold_single_threaded, blocks) if pool else map(fold, blocks)
        if progress:
            from tqdm.auto import tqdm

            results = tqdm(results, total=len(blocks), desc="metrics", unit="query block")
        for rows, out in results:
            per_query["query_index"].append(rows)
            for key, value in out.items():
                per_query[key].append(value)
    if torch.get_num_threads() != caller_threads:  # builds where the setting is process-wide
        torch.set_num_threads(caller_threads)
    pq = {k: np.concatenate(v) for k, v in per_query.items()}
    back = np.argsort(pq["query_index"], kind="stable")  # report in the callers' query order
    pq = {k: v[back] for k, v in pq.items()}
    result: dict[str, Any] = {}
    for k in ks:
        result[f"R@{k}"] = float(np.mean(pq["first_positive_rank"] <= k) * 100.0)
    result["mAP"] = float(np.mean(pq["ap"]) * 100.0)
    result["mINP"] = float(np.mean(pq["inp"]) * 100.0)
    result["mSD"] = float(np.mean(pq["sd"]) * 100.0)
    result["num_queries"] = int(len(evaluated))
    result["num_skipped_queries"] = int(skipped)
    if return_per_query:
        result["per_query"] = pq
    return result


def retrieval_metrics(
    similarity: ArrayLike,
    query_ids: ArrayLike,
    gallery_ids: ArrayLike,
    ks: Sequence[int] = (1, 5, 10),
    similarity_range: Sequence[float] = (-1.0, 1.0),
    return_per_query: bool = False,
) -> dict[str, Any]:
    """R@k, mAP, mINP and mSD (percent) of text-to-image retrieval from a dense similarity matrix.

    Args:
        similarity: ``[Q, G]`` query-by-gallery similarities (torch tensor, numpy array or nested lists).
        query_ids: ``[Q]`` identity of each query (ints or strings).
        gallery_ids: ``[G]`` identity of each gallery item.
        ks: the ranks reported as ``R@k``.
        similarity_range: ``(low, high)`` of the model's similarity; mSD normalizes with it. Values outside it by
            more than 1e-3 raise.
        return_per_query: also return ``"per_query"``: numpy arrays over the evaluated queries (in query order):
            ``query_index``, ``first_positive_rank`` (1-based), ``ap``, ``inp``, ``sd`` (fractions, not percent).

    Returns:
        ``{"R@1", "R@5", "R@10", "mAP", "mINP", "mSD", "num_queries", "num_skipped_queries"}`` (+ ``"per_query"``).
        ``num_queries`` counts the evaluated queries; queries without a positive are skipped and counted.

    Query blocks run on ``torch.get_num_threads()`` worker threads with one intra-op thread each; the caller's
    thread setting is left as it was.
    """
    sim = _as_similarity(similarity)
    q, g = sim.shape
    lo, hi = _check_range(similarity_range)
    in_range = _check_block(sim, lo, hi, np.arange(q), 0, "similarity") if q and g else True
    gallery_block = max(1, min(g, 1 << 18))
    query_block = max(1, _BLOCK_ELEMENTS // max(gallery_block, 1))

    def get_block(rows: np.ndarray, g0: int, g1: int) -> torch.Tensor:
        block = sim.index_select(0, torch.from_numpy(rows))  # a copy: the kernel overwrites it
        return block if (g0, g1) == (0, g) else block[:, g0:g1].contiguous()

    def get_positive_scores(rows: np.ndarray, pos_idx: np.ndarray, valid: np.ndarray) -> torch.Tensor:
        return sim[torch.from_numpy(rows)[:, None], torch.from_numpy(pos_idx)]

    return _run(
        get_block, get_positive_scores, query_ids, gallery_ids, q, g, ks, similarity_range,
        query_block, gallery_block, return_per_query, check_blocks=False, name="similarity", all_in_range=in_range,
    )  # fmt: skip
