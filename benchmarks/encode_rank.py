"""Encode + rank time of a preset on a CUHK-PEDES-sized test set (3,074 images, 6,156 captions).

The paper (IVT) reports 42 s on a V100 for encoding the CUHK-PEDES test set and ranking. Random weights and random
inputs are fine for timing. On a CPU a full run can take long: ``--num_images`` / ``--num_queries`` encode a subset,
and the script extrapolates linearly to the full sizes, printing what was measured and what was extrapolated. Ranking
is timed on the full 6,156 × 3,074 problem (features for unmeasured items are random, same shape) three ways:
the dense metric core on ``model.similarity``, the streaming metric core, and a FAISS top-10 search.

    python benchmarks/encode_rank.py --model ivt --preset base --num_images 128 --num_queries 256
    python benchmarks/encode_rank.py --model ivt --preset base --device cuda       # full sizes on a GPU
    python benchmarks/encode_rank.py --model laip --preset albef-b16 --num_images 32 --num_queries 64  # + re-rank

A cross-encoder (LAIP) also times its second stage: `model.rerank` of the top-k candidates for k in `--rerank_k`,
on `--rerank_queries` queries, extrapolated per pair to the full query set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from tbps_hf.models import method_names


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ivt", choices=method_names(), help="registered method: %(choices)s")
    parser.add_argument("--preset", default="base")
    parser.add_argument("--gallery_size", type=int, default=3074)
    parser.add_argument("--query_size", type=int, default=6156)
    parser.add_argument("--num_images", type=int, default=None, help="images actually encoded (default: all)")
    parser.add_argument("--num_queries", type=int, default=None, help="captions actually encoded (default: all)")
    parser.add_argument("--caption_words", type=int, default=60, help="words per synthetic caption (~60 tokens)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--pretrained_tokenizer", action="store_true",
        help="load the preset's tokenizer (hub id / folder) instead of training a WordPiece on synthetic captions",
    )
    parser.add_argument("--fp16", action="store_true", help="autocast to float16 (GPU)")
    parser.add_argument(
        "--image_workers", type=int, nargs="+", default=None,
        help="threads preparing image batches ahead (encode_images' num_workers; default: its own default). Several "
        "values are timed side by side on the same images; the first one counts for the total.",
    )
    parser.add_argument(
        "--jpeg_files", action="store_true",
        help="write the synthetic crops as JPEG files and encode from the paths (decoding included, as for a folder "
        "gallery); default: in-memory PIL images",
    )
    parser.add_argument(
        "--rerank_k", type=int, nargs="+", default=[16, 64, 128],
        help="cross-encoders (laip): candidates re-ranked per query, each timed (default 16 64 128)",
    )
    parser.add_argument(
        "--rerank_queries", type=int, default=8,
        help="cross-encoders: queries actually re-ranked per k (the time per pair is extrapolated to --query_size)",
    )
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)

    import tbps_hf
    from tbps_hf.metrics import retrieval_metrics, streaming_retrieval_metrics
    from tbps_hf.modeling_utils import features_length, map_features
    from tbps_hf.retrieval import GalleryIndex, encode_images, encode_texts

    device = torch.device(args.device)
    method = tbps_hf.get_method(args.model)
    config = method.config_class.from_preset(args.preset)
    rng = np.random.default_rng(0)
    words = ("man woman wearing black white red blue green grey shirt jacket coat pants jeans shorts skirt shoes "
             "sneakers carrying bag backpack holding phone umbrella hair short long glasses hat with and a the").split()
    captions = [" ".join(rng.choice(words, size=args.caption_words)) for _ in range(200)]
    if getattr(config, "tokenizer_name", None) and not args.pretrained_tokenizer:
        # Timing does not need the real vocabulary: a WordPiece trained on the synthetic captions gives the same
        # token counts for these plain words, and the embedding table keeps the preset's vocab_size.
        config.tokenizer_name = None
    processor = method.processor_class.from_config(config, captions=captions)
    config.vocab_size = max(int(config.vocab_size), len(processor.tokenizer))
    torch.manual_seed(0)
    model = method.model_class(config).eval().to(device)
    n_params = sum(p.numel() for p in model.parameters())

    num_images = min(args.num_images or args.gallery_size, args.gallery_size)
    num_queries = min(args.num_queries or args.query_size, args.query_size)
    height, width = config.image_size
    from PIL import Image

    # Crops at the preset's size (the processor still resizes/normalizes them, as in real evaluation).
    images = [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(num_images)]
    if args.jpeg_files:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="encode_rank_"))
        for i, image in enumerate(images):
            image.save(folder / f"{i:06d}.jpg", quality=90)
        images = sorted(folder.glob("*.jpg"))
    queries = [captions[i % len(captions)] for i in range(num_queries)]
    token_lengths = processor(text=queries[:64], return_tensors="pt")["attention_mask"].sum(1).float()

    autocast = torch.autocast(device.type, dtype=torch.float16) if args.fp16 else torch.autocast(device.type, enabled=False)
    with autocast:
        encode_images(model, processor, images[: min(4, num_images)], 4, device, progress=False)  # warm-up
        _sync(device)
        image_seconds = {}
        for workers in args.image_workers or [None]:
            t0 = time.perf_counter()
            features = encode_images(model, processor, images, args.batch_size, device, True, num_workers=workers)
            _sync(device)
            image_seconds[workers] = time.perf_counter() - t0
            if len(image_seconds) == 1:
                image_features = features
        t_images = next(iter(image_seconds.values()))
        t0 = time.perf_counter()
        text_features = encode_texts(model, processor, queries, args.batch_size, device, progress=True)
        _sync(device)
        t_texts = time.perf_counter() - t0

    # Full-size feature sets for ranking: the measured features tiled, plus a little noise so rows are not exact
    # duplicates (ranking time does not depend on the values otherwise).
    def tile(features, n):
        reps = -(-n // features_length(features))

        def grow(t):
            t = t.float().repeat(reps, *[1] * (t.ndim - 1))[:n]
            return (t + 0.01 * t.std() * torch.randn_like(t)).contiguous()

        return map_features(features, grow)

    gallery = tile(image_features, args.gallery_size)
    texts = tile(text_features, args.query_size)
    gallery_ids = np.repeat(np.arange(-(-args.gallery_size // 3)), 3)[: args.gallery_size]
    query_ids = gallery_ids[rng.integers(0, args.gallery_size, args.query_size)]
    sim_range = model.similarity_range

    with torch.inference_mode():
        t0 = time.perf_counter()
        sim = model.similarity(texts, gallery).float().cpu()
        t_sim = time.perf_counter() - t0
        sim = sim.clamp(*sim_range)
        t0 = time.perf_counter()
        retrieval_metrics(sim, query_ids, gallery_ids, similarity_range=sim_range)
        t_dense = time.perf_counter() - t0
        t0 = time.perf_counter()
        streaming_retrieval_metrics(
            texts, gallery, query_ids, gallery_ids,
            similarity_fn=lambda a, b: model.similarity(a, b).clamp(*sim_range), similarity_range=sim_range,
        )
        t_stream = time.perf_counter() - t0
        index = GalleryIndex(model)
        t0 = time.perf_counter()
        index.add(gallery)
        t_index_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        index.search(texts, k=10)
        t_faiss = time.perf_counter() - t0

    scale_i, scale_q = args.gallery_size / num_images, args.query_size / num_queries
    full_images, full_texts = t_images * scale_i, t_texts * scale_q
    rank_time = t_sim + t_dense
    total = full_images + full_texts + rank_time
    result = {
        "model": args.model,
        "preset": args.preset,
        "parameters_M": round(n_params / 1e6, 1),
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 1),
        "batch_size": args.batch_size,
        "image_size": [height, width],
        "mean_caption_tokens": round(float(token_lengths.mean()), 1),
        "measured": {
            "images_encoded": num_images,
            "queries_encoded": num_queries,
            "encode_images_s": round(t_images, 2),
            "encode_texts_s": round(t_texts, 2),
            "images_per_s": round(num_images / t_images, 1),
            "captions_per_s": round(num_queries / t_texts, 1),
            "similarity_matrix_s": round(t_sim, 3),
            "dense_metrics_s": round(t_dense, 3),
            "streaming_metrics_s": round(t_stream, 3),
            "faiss_build_s": round(t_index_build, 4),
            "faiss_top10_search_s": round(t_faiss, 3),
            "images_from": "jpeg files" if args.jpeg_files else "in-memory PIL",
            "encode_images_s_by_workers": {str(w): round(t, 2) for w, t in image_seconds.items()},
        },
        "extrapolated" if (scale_i > 1 or scale_q > 1) else "full": {
            "gallery_size": args.gallery_size,
            "query_size": args.query_size,
            "encode_images_s": round(full_images, 1),
            "encode_texts_s": round(full_texts, 1),
            "rank_dense_s": round(rank_time, 2),
            "total_encode_rank_s": round(total, 1),
        },
    }
    if getattr(config, "is_cross_encoder", False):
        result["rerank"] = _time_rerank(model, text_features, image_features, args, device, total)
    print(json.dumps(result, indent=2))
    kind = "EXTRAPOLATED linearly from the measured subset" if (scale_i > 1 or scale_q > 1) else "measured"
    print(
        f"\n{args.model}/{args.preset} on {device}: encode {num_images} images in {t_images:.1f} s and {num_queries} "
        f"captions in {t_texts:.1f} s (measured); full {args.gallery_size} images + {args.query_size} captions + "
        f"ranking ≈ {total:.0f} s ({kind}; ranking itself measured at full size: similarity {t_sim:.2f} s + dense "
        f"metrics {t_dense:.2f} s; streaming metrics {t_stream:.2f} s; FAISS top-10 {t_faiss:.2f} s)."
    )
    if len(image_seconds) > 1:
        base = next(iter(image_seconds.values()))
        print("image encoding by prefetch threads (same images, same run): " + ", ".join(
            f"{w}: {t:.2f} s ({base / t:.2f}x vs {next(iter(image_seconds))})" for w, t in image_seconds.items()))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def _time_rerank(model, text_features, image_features, args, device, dual_total_s: float) -> dict:
    """Second stage of a cross-encoder: `model.rerank` of `--rerank_queries` queries' top-k first-stage candidates
    among the measured images (keys/values once per candidate image), per k; the time per pair is extrapolated to
    `--query_size` queries (pairs are independent, so the cost is linear in their number)."""
    from tbps_hf.modeling_utils import features_length, slice_features
    from tbps_hf.reranking import first_stage_candidates

    queries = min(args.rerank_queries, features_length(text_features))
    texts = slice_features(text_features, slice(0, queries))
    out = {}
    with torch.inference_mode():
        first = model.similarity(texts, image_features)
        for k in args.rerank_k:
            kk = min(k, features_length(image_features))
            candidates = first_stage_candidates(first, kk)
            _sync(device)
            t0 = time.perf_counter()
            model.rerank(texts, image_features, candidates)
            _sync(device)
            seconds = time.perf_counter() - t0
            per_pair = seconds / (queries * kk)
            full = per_pair * args.query_size * k
            out[str(k)] = {
                "queries": queries,
                "candidates_measured": kk,
                "measured_s": round(seconds, 3),
                "ms_per_pair": round(1000 * per_pair, 3),
                "full_query_set_s_extrapolated": round(full, 1),
                "ratio_to_dual_encoder_part": round(full / max(dual_total_s, 1e-9), 2),
            }
            print(f"re-rank k={k}: {1000 * per_pair:.2f} ms/pair measured on {queries}x{kk} pairs → "
                  f"{full:.0f} s for {args.query_size} queries (extrapolated), {full / dual_total_s:.1f}x the "
                  "encode + first-stage part")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
