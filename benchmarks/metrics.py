"""Speed of the retrieval metrics (not a test).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/metrics.py            # CUHK-PEDES size + 50k x 200k streaming
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/metrics.py --quick    # small smoke run
    .venv/bin/python benchmarks/metrics.py --threads 1 --no-stream     # dense part only, 1 intra-op thread
    .venv/bin/python benchmarks/metrics.py --no-dense --stream 50000 50000 256   # a fraction of the streaming run

Prints, side by side in one run: the similarity matmul, ``retrieval_metrics`` vs a full stable-argsort
implementation of the same definitions (and their ratio), the UFineBench reference script's mSD under a gallery
permutation, and a streaming run (own subprocess, so its peak RSS is its own).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def _problem(num_queries, num_gallery, dim, seed=0, images_per_id=3):
    g = torch.Generator().manual_seed(seed)
    gallery_ids = np.arange(num_gallery) // images_per_id
    query_ids = gallery_ids[torch.randint(num_gallery, (num_queries,), generator=g).numpy()]
    text = torch.nn.functional.normalize(torch.randn(num_queries, dim, generator=g), dim=1)
    image = torch.nn.functional.normalize(torch.randn(num_gallery, dim, generator=g), dim=1)
    return text, image, query_ids, gallery_ids


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _current_rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _load():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def dense(num_queries, num_gallery, dim, repeat):
    from tbps_hf.metrics import retrieval_metrics
    from tbps_hf.metrics.reference import argsort_retrieval_metrics, ufinebench_script_msd

    text, image, qids, gids = _problem(num_queries, num_gallery, dim)
    print(f"dense {num_queries} x {num_gallery}, {dim}-d, {torch.get_num_threads()} intra-op thread(s); "
          f"median of {repeat} side-by-side repeats")  # fmt: skip
    rows = []
    for i in range(repeat):  # each repeat times all three back to back, so a ratio shares the machine's load
        sim, t_mm = _timed(lambda: text @ image.T)
        fast, t_fast = _timed(lambda: retrieval_metrics(sim, qids, gids))
        slow, t_slow = _timed(lambda: argsort_retrieval_metrics(sim, qids, gids))
        rows.append((t_mm, t_fast, t_slow, t_slow / t_fast))
        print(f"  repeat {i + 1}: matmul {t_mm:.3f} s, retrieval_metrics {t_fast:.3f} s, argsort {t_slow:.3f} s,"
              f" ratio {t_slow / t_fast:.1f}x (load {_load()})", flush=True)  # fmt: skip
    t_mm, t_fast, t_slow, ratio = np.median(np.array(rows), axis=0)
    diff = max(abs(fast[k] - slow[k]) for k in ("R@1", "R@5", "R@10", "mAP", "mINP", "mSD"))
    print(f"  similarity matmul           {t_mm:8.3f} s")
    print(f"  retrieval_metrics           {t_fast:8.3f} s")
    print(f"  full stable argsort version {t_slow:8.3f} s   ratio {ratio:.1f}x (median)   max |diff| {diff:.2e}")
    # a perfect ranking: the public script's mSD depends on gallery order, the definition does not
    perfect = sim.clone()
    pos = torch.from_numpy(qids[:, None] == gids[None, :])
    perfect[pos] = 0.5 + 0.4 * torch.rand(int(pos.sum()), generator=torch.Generator().manual_seed(1))
    perm = torch.randperm(num_gallery, generator=torch.Generator().manual_seed(2)).numpy()
    ours = retrieval_metrics(perfect, qids, gids)["mSD"]
    ours_p = retrieval_metrics(perfect[:, perm], qids, gids[perm])["mSD"]
    script = ufinebench_script_msd(perfect, qids, gids)
    script_p = ufinebench_script_msd(perfect[:, perm], qids, gids[perm])
    print(f"  perfect ranking mSD: definition {ours:.2f} / permuted {ours_p:.2f};"
          f" UFineBench script {script:.2f} / permuted {script_p:.2f}")  # fmt: skip


def streaming_child(num_queries, num_gallery, dim, threads):
    from tbps_hf.metrics import streaming_retrieval_metrics

    torch.set_num_threads(threads)
    text, image, qids, gids = _problem(num_queries, num_gallery, dim, images_per_id=4)
    rss_before = _current_rss_kib()  # features + imports (the setup's own temporaries are freed by now)
    out, seconds = _timed(lambda: streaming_retrieval_metrics(text, image, qids, gids))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    # per-block throughput: one [1024, 4096] block scored (matmul) and folded in, over many blocks
    print(json.dumps({"seconds": seconds, "peak_rss_gb": peak / 2**20, "rss_before_gb": rss_before / 2**20,
                      "pairs_per_s": num_queries * num_gallery / seconds, "mSD": out["mSD"], "R@1": out["R@1"],
                      "load": _load()}))  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads (both runs)")
    parser.add_argument("--repeat", type=int, default=3, help="side-by-side repeats of the dense comparison")
    parser.add_argument("--no-dense", action="store_true", help="skip the dense comparison")
    parser.add_argument("--no-stream", action="store_true", help="skip the streaming run")
    parser.add_argument("--stream", nargs=3, type=int, metavar=("Q", "G", "D"), help="streaming shape")
    parser.add_argument("--child", nargs=4, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return streaming_child(*args.child)
    torch.set_num_threads(args.threads)
    print(f"machine: {os.cpu_count()} CPUs, load average {_load()}")
    if not args.no_dense:
        if args.quick:
            dense(600, 300, 64, repeat=1)
        else:
            dense(6156, 3074, 512, repeat=args.repeat)
    if args.no_stream:
        return
    shape = args.stream or ((2000, 8000, 64) if args.quick else (50_000, 200_000, 256))
    cmd = [sys.executable, __file__, "--child", *map(str, shape), str(args.threads)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode:
        sys.exit(run.stderr)
    res = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"streaming {shape[0]} x {shape[1]}, {shape[2]}-d, ~4 images per identity, {args.threads} thread(s): "
          f"{res['seconds']:.1f} s ({res['pairs_per_s'] / 1e6:.1f} M pairs/s), peak RSS {res['peak_rss_gb']:.2f} GB"
          f" (features + imports before the run: {res['rss_before_gb']:.2f} GB); load at the end {res['load']}")  # fmt: skip


if __name__ == "__main__":
    main()
