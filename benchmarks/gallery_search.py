"""Gallery search at scale: FAISS index types side by side on synthetic gallery-shaped embeddings.

    python benchmarks/gallery_search.py                                   # 1,000,000 × 256-d (the documented run)
    python benchmarks/gallery_search.py --num_vectors 100000 --num_queries 500   # a quick look

The vectors are shaped like a person-search gallery rather than uniform noise: identities are points of a
low-rank "attribute" space (people share colours, garments, bags) plus a little isotropic spread, each identity has
several views (camera / pose noise around its centre), and each query is its identity's centre seen through a
different, larger noise (the text–image gap). Everything is L2-normalized and searched by inner product, as the
demo's ``GalleryIndex`` does.

For each index (flat, IVF-Flat, IVF-PQ, HNSW and any other ``--index`` factory string) it reports the build time
(training + adding), the index's memory (its serialized size), queries per second (all queries in one batched call
on ``--threads`` threads) and recall@10 against the exact flat index, sweeping ``nprobe`` (IVF) or ``efSearch``
(HNSW). It then names the fastest configuration with recall@10 >= ``--target_recall`` and its speed-up over flat.
Results go to ``--out`` (JSON) and are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

DEFAULT_INDEXES = ["Flat", "IVF1024,Flat", "IVF1024,PQ32,RFlat", "HNSW32"]


def gallery_like(num_vectors: int, dim: int, views: int, num_queries: int, latent_dim: int, seed: int):
    """``(gallery [N, d], queries [Q, d], gallery_ids [N], query_ids [Q])``, float32, unit norm."""
    rng = np.random.default_rng(seed)
    num_ids = -(-num_vectors // views)
    basis = rng.standard_normal((latent_dim, dim)).astype(np.float32) / np.sqrt(latent_dim)
    gallery = np.empty((num_vectors, dim), dtype=np.float32)
    centres = np.empty((num_ids, dim), dtype=np.float32)
    block = 65536  # generate in blocks: a 1M × 256 float64 temporary would need 2 GB
    for start in range(0, num_ids, block):
        n = min(block, num_ids - start)
        c = rng.standard_normal((n, latent_dim)).astype(np.float32) @ basis
        c += 0.35 * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim) * np.sqrt(latent_dim)
        centres[start : start + n] = c / np.linalg.norm(c, axis=1, keepdims=True)
    ids = np.repeat(np.arange(num_ids), views)[:num_vectors]
    for start in range(0, num_vectors, block):
        end = min(start + block, num_vectors)
        v = centres[ids[start:end]] + 0.25 * rng.standard_normal((end - start, dim)).astype(np.float32) / np.sqrt(dim)
        gallery[start:end] = v / np.linalg.norm(v, axis=1, keepdims=True)
    query_ids = rng.choice(num_ids, size=num_queries, replace=False)
    q = centres[query_ids] + 0.45 * rng.standard_normal((num_queries, dim)).astype(np.float32) / np.sqrt(dim)
    queries = q / np.linalg.norm(q, axis=1, keepdims=True)
    return gallery, queries.astype(np.float32), ids, query_ids


def disable_polysemous_training(index, faiss) -> None:
    """IVF-PQ trains polysemous codes by default (simulated annealing over code assignments, minutes even on a small
    sample); they only serve Hamming-filtered search, which neither this benchmark nor GalleryIndex uses."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and hasattr(faiss.downcast_index(ivf), "do_polysemous_training"):
        faiss.downcast_index(ivf).do_polysemous_training = False


def sweep_values(index, faiss) -> tuple[str | None, list[int]]:
    if faiss.try_extract_index_ivf(index) is not None:
        nlist = faiss.extract_index_ivf(index).nlist
        return "nprobe", [v for v in (4, 8, 16, 32, 64, 128) if v <= nlist]
    if hasattr(faiss.downcast_index(index), "hnsw"):
        return "efSearch", [16, 32, 64, 128, 256]
    return None, [0]


def set_parameter(index, faiss, name: str | None, value: int) -> None:
    if name == "nprobe":
        faiss.extract_index_ivf(index).nprobe = value
    elif name == "efSearch":
        faiss.downcast_index(index).hnsw.efSearch = value


def timed_search(index, queries: np.ndarray, k: int, repeats: int = 1):
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = index.search(queries, k)
        best = min(best, time.perf_counter() - t0)
    return best, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_vectors", type=int, default=1_000_000, help="gallery size (default 1,000,000)")
    parser.add_argument("--dim", type=int, default=256, help="embedding dimension (default 256)")
    parser.add_argument("--views", type=int, default=4, help="views per identity (default 4)")
    parser.add_argument("--latent_dim", type=int, default=48, help="rank of the shared attribute space (default 48)")
    parser.add_argument("--num_queries", type=int, default=500, help="queries (default 500)")
    parser.add_argument("--k", type=int, default=10, help="recall@k against flat (default 10)")
    parser.add_argument("--index", nargs="+", default=DEFAULT_INDEXES, help=f"index_factory strings (default {DEFAULT_INDEXES})")
    parser.add_argument("--train_size", type=int, default=65536, help="vectors the trained indexes learn from (default 65536: 64 per IVF list, FAISS's PQ sample)")
    parser.add_argument(
        "--refine_k_factor", type=int, default=8,
        help="candidates re-scored exactly per result by a refined index (',RFlat'): k × this (default 8)",
    )  # fmt: skip
    parser.add_argument(
        "--hnsw_ef_construction", type=int, default=None, help="HNSW efConstruction (default: FAISS's, 40)"
    )
    parser.add_argument("--target_recall", type=float, default=0.95, help="recall@k a configuration must reach (0.95)")
    parser.add_argument("--threads", type=int, default=None, help="FAISS threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/benchmarks/gallery_search.json", help="JSON results")
    args = parser.parse_args(argv)

    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    threads = faiss.omp_get_max_threads()
    t0 = time.perf_counter()
    gallery, queries, _, _ = gallery_like(args.num_vectors, args.dim, args.views, args.num_queries, args.latent_dim, args.seed)
    print(f"data: {gallery.shape[0]:,} × {args.dim} gallery, {len(queries)} queries, {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(args.seed + 1)
    train = gallery[rng.choice(len(gallery), size=min(args.train_size, len(gallery)), replace=False)]

    rows, truth, flat_qps = [], None, None
    for factory in dict.fromkeys(["Flat", *args.index]):  # flat first: it is the ground truth
        index = faiss.index_factory(args.dim, factory, faiss.METRIC_INNER_PRODUCT)
        disable_polysemous_training(index, faiss)
        hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
        if hnsw is not None and args.hnsw_ef_construction:
            hnsw.efConstruction = args.hnsw_ef_construction  # graph quality at build time (FAISS default 40)
        t_build = time.perf_counter()
        if not index.is_trained:
            index.train(train)
        t_train = time.perf_counter() - t_build
        index.add(gallery)
        build = time.perf_counter() - t_build
        refine = faiss.downcast_index(index)
        is_refine = isinstance(refine, faiss.IndexRefine)
        memory = faiss.serialize_index(index).nbytes
        # A refined index with k_factor 1 returns exactly its base index's top-k (re-scored): the plain IVF-PQ row
        # comes from the same build, with the base index's memory.
        base_memory = faiss.serialize_index(faiss.downcast_index(refine.base_index)).nbytes if is_refine else memory
        name, values = sweep_values(index, faiss)
        combos = [(v, kf) for kf in ((1, args.refine_k_factor) if is_refine else (None,)) for v in values]
        for value, k_factor in combos:
            set_parameter(index, faiss, name, value)
            if is_refine:
                refine.k_factor = k_factor
            seconds, (_, found) = timed_search(index, queries, args.k, repeats=1 if factory == "Flat" else 2)
            if truth is None:
                truth, flat_qps = found, len(queries) / seconds
            recall = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(found, truth)]))
            label = factory if not is_refine or k_factor > 1 else factory.rsplit(",RFlat", 1)[0] + " (codes only)"
            param = (f"{name}={value}" if name else "") + (f", k_factor={k_factor}" if is_refine and k_factor > 1 else "")
            row = {
                "index": label, "parameter": param, "build_s": round(build, 1),
                "train_s": round(t_train, 1), "memory_mb": round((memory if not is_refine or k_factor > 1 else base_memory) / 2**20, 1),
                "qps": round(len(queries) / seconds, 1), "speedup": round(len(queries) / seconds / flat_qps, 1),
                f"recall@{args.k}": round(recall, 4),
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
        del index

    meeting = [r for r in rows if r[f"recall@{args.k}"] >= args.target_recall and r["index"] != "Flat"]
    best = max(meeting, key=lambda r: r["qps"]) if meeting else None
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    result = {
        "command": "python benchmarks/gallery_search.py " + " ".join(argv if argv is not None else os.sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "faiss_threads": threads, "platform": platform.platform(),
                    "processor": platform.processor(), "loadavg_after": load, "faiss": faiss.__version__},
        "data": {"num_vectors": args.num_vectors, "dim": args.dim, "views": args.views, "latent_dim": args.latent_dim,
                 "num_queries": args.num_queries, "train_size": len(train)},
        "rows": rows,
        "best": best,
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))

    print(f"\n| index | search parameter | build (s) | memory (MB) | queries/s | × flat | recall@{args.k} |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['index']} | {r['parameter'] or '–'} | {r['build_s']} | {r['memory_mb']} | {r['qps']} | {r['speedup']} | {r[f'recall@{args.k}']:.3f} |")
    if best:
        print(f"\nfastest with recall@{args.k} >= {args.target_recall}: {best['index']} {best['parameter']} — "
              f"{best['qps']} queries/s, {best['speedup']}× flat, recall {best[f'recall@{args.k}']:.3f}")  # fmt: skip
    else:
        print(f"\nno configuration reached recall@{args.k} >= {args.target_recall}")
    print(f"{threads} FAISS threads; load average after the run: {load}; results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
