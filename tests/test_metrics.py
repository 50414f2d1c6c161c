"""Retrieval metrics: fast core and streaming vs a slow literal reference, evaluate modules, plots, bad inputs."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tbps_hf.metrics import load, retrieval_metrics, streaming_retrieval_metrics
from tbps_hf.metrics.plots import plot_cmc, plot_sd_distribution
from tbps_hf.metrics.reference import argsort_retrieval_metrics, reference_retrieval_metrics, ufinebench_script_msd

REPO = Path(__file__).resolve().parents[1]
SCALARS = ("R@1", "R@5", "R@10", "mAP", "mINP", "num_queries", "num_skipped_queries")


def assert_same(got, want, msd_atol=2e-5):
    for key in SCALARS:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
    assert got["mSD"] == pytest.approx(want["mSD"], abs=msd_atol)
    if "per_query" in got and "per_query" in want:
        for key in ("query_index", "first_positive_rank"):
            np.testing.assert_array_equal(got["per_query"][key], want["per_query"][key], err_msg=key)
        for key in ("ap", "inp"):
            np.testing.assert_allclose(got["per_query"][key], want["per_query"][key], atol=1e-12, err_msg=key)
        np.testing.assert_allclose(got["per_query"]["sd"], want["per_query"]["sd"], atol=msd_atol / 100)


@st.composite
def problems(draw, max_q=8, max_g=12):
    q = draw(st.integers(1, max_q))
    g = draw(st.integers(1, max_g))
    # few distinct values on a dyadic grid: many exact ties, sums exact in float32
    levels = draw(st.integers(1, 9))
    values = draw(st.lists(st.integers(0, levels - 1), min_size=q * g, max_size=q * g))
    sim = np.asarray(values, dtype=np.float32).reshape(q, g) / max(levels - 1, 1) * 2 - 1
    n_ids = draw(st.integers(1, 5))
    qids = np.asarray(draw(st.lists(st.integers(0, n_ids), min_size=q, max_size=q)))
    gids = np.asarray(draw(st.lists(st.integers(0, n_ids - 1), min_size=g, max_size=g)))
    return sim, qids, gids


def _has_positive(qids, gids):
    return np.isin(qids, gids).any()


@settings(max_examples=60, deadline=None)
@given(problems())
def test_core_matches_reference(problem):
    sim, qids, gids = problem
    if not _has_positive(qids, gids):
        with pytest.raises(ValueError, match="none of the"):
            retrieval_metrics(sim, qids, gids)
        return
    want = reference_retrieval_metrics(sim, qids, gids)
    assert_same(retrieval_metrics(sim, qids, gids, return_per_query=True), want)
    assert_same(retrieval_metrics(torch.from_numpy(sim), torch.from_numpy(qids), gids), want)
    assert_same(argsort_retrieval_metrics(torch.from_numpy(sim), qids, gids), want, msd_atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(problems(), st.floats(-3, 3), st.floats(0.5, 4), st.randoms(use_true_random=False))
def test_ranges_and_float64(problem, shift, width, rnd):
    sim, qids, gids = problem
    if not _has_positive(qids, gids):
        return
    lo, hi = shift, shift + width
    # float64 values inside [lo, hi] incl. a few within the 1e-3 tolerance outside (clipped for mSD only)
    sim64 = lo + (sim.astype(np.float64) + 1) / 2 * width
    sim64[sim == -1] -= 5e-4 if rnd.random() < 0.5 else 0
    want = reference_retrieval_metrics(sim64, qids, gids, similarity_range=(lo, hi))
    got = retrieval_metrics(sim64, qids, gids, similarity_range=(lo, hi), return_per_query=True)
    assert_same(got, want, msd_atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(problems(), st.randoms(use_true_random=False))
def test_gallery_permutation_invariance(problem, rnd):
    sim, qids, gids = problem
    if not _has_positive(qids, gids):
        return
    sim = sim * 0.9 + np.arange(sim.shape[1], dtype=np.float32) * 1e-3  # no ties: then the ranking is order-free
    perm = np.arange(sim.shape[1])
    rnd.shuffle(perm)
    a = retrieval_metrics(sim, qids, gids)
    b = retrieval_metrics(sim[:, perm], qids, gids[perm])
    assert_same(a, b, msd_atol=1e-4)  # mSD sums are float32 per block: rounding depends on the column order


def test_reference_script_depends_on_gallery_order():
    # a perfect ranking: each query's positives score highest; permuting gallery columns changes nothing real
    rng = np.random.default_rng(0)
    gids = np.repeat(np.arange(20), 3)
    qids = np.arange(20)
    sim = rng.uniform(-0.5, 0.3, size=(20, 60))
    sim[qids[:, None] == gids[None, :]] = rng.uniform(0.5, 0.9, size=60)
    perm = rng.permutation(60)
    ours = retrieval_metrics(sim, qids, gids)["mSD"]
    assert retrieval_metrics(sim[:, perm], qids, gids[perm])["mSD"] == pytest.approx(ours, abs=1e-9)
    script, script_perm = ufinebench_script_msd(sim, qids, gids), ufinebench_script_msd(sim[:, perm], qids, gids[perm])
    assert abs(script - script_perm) > 1.0  # the script mixes rank order and gallery order
    # with positives stored first in every row, rank order == gallery order for them and the script agrees
    lead = np.argsort(-sim[0])  # query 0's rank order
    assert ufinebench_script_msd(sim[:1, lead], qids[:1], gids[lead]) == pytest.approx(
        retrieval_metrics(sim[:1, lead], qids[:1], gids[lead])["mSD"], abs=1e-6
    )


def test_hand_computed_example():
    # one query, gallery [pos, neg, pos, neg]; scores in [0, 1] so s' = s
    sim = np.array([[0.8, 0.9, 0.6, 0.2]])
    out = retrieval_metrics(sim, [1], [1, 0, 1, 0], similarity_range=(0, 1), return_per_query=True)
    # rank order: neg 0.9, pos 0.8, pos 0.6, neg 0.2 -> positives at ranks 2, 3
    assert out["per_query"]["first_positive_rank"].tolist() == [2]
    assert out["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2 * 100)
    assert out["mINP"] == pytest.approx(2 / 3 * 100)
    x = 0.7 / 0.55
    asp = (0.8 / 1.7 + 1.4 / 2.3) / 2
    assert out["mSD"] == pytest.approx((1 - np.exp(-x)) * asp * 100)
    assert out["R@1"] == 0 and out["R@5"] == 100


def test_corner_cases():
    # no negatives -> PNR 1; query 1 has no positive -> skipped and counted
    out = retrieval_metrics(np.array([[0.5, 0.1], [0.3, 0.2]]), [7, 9], [7, 7], return_per_query=True)
    assert out["num_queries"] == 1 and out["num_skipped_queries"] == 1
    assert out["per_query"]["query_index"].tolist() == [0]
    assert out["mSD"] == pytest.approx(100.0)  # ASP 1, PNR 1
    # ties: lower gallery index first
    out = retrieval_metrics(np.zeros((1, 3)), [1], [0, 1, 1])
    assert out["R@1"] == 0 and out["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2 * 100)


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.zeros(3), [1], [1, 1, 1]), "2-D"),
        ((np.zeros((2, 3)), [1], [1, 1, 1]), "query_ids has 1"),
        ((np.zeros((2, 3)), [1, 1], [1, 1]), "gallery_ids has 2"),
        ((np.array([[0.0, np.nan]]), [1], [1, 2]), r"NaN at \(query 0, gallery 1\)"),
        ((np.array([[0.0, 1.5]]), [1], [1, 2]), "1.5 at .*outside similarity_range"),
        ((np.zeros((1, 2)), [[1]], [1, 2]), "query_ids must be 1-D"),
        ((np.zeros((1, 2)), [3], [1, 2]), "none of the 1 queries"),
    ],
)
def test_bad_inputs(args, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(*args)


def test_bad_options():
    with pytest.raises(ValueError, match="ks"):
        retrieval_metrics(np.zeros((1, 2)), [1], [1, 2], ks=(0,))
    with pytest.raises(ValueError, match="similarity_range"):
        retrieval_metrics(np.zeros((1, 2)), [1], [1, 2], similarity_range=(1, 1))
    assert retrieval_metrics(np.full((1, 2), -1.0009), [1], [1, 2])["mSD"] >= 0  # within tolerance: clipped


@settings(max_examples=30, deadline=None)
@given(problems(max_q=10, max_g=14), st.integers(1, 5), st.integers(1, 6), st.integers(1, 4))
def test_streaming_equals_dense(problem, qb, gb, d):
    sim, qids, gids = problem
    if not _has_positive(qids, gids):
        return
    rng = np.random.default_rng(qb * 7 + gb)
    # small dyadic features: every dot product is exact whatever the block shapes
    text = torch.tensor(rng.integers(-2, 3, size=(len(qids), d)) / 4, dtype=torch.float32)
    image = torch.tensor(rng.integers(-2, 3, size=(len(gids), d)) / 4, dtype=torch.float32)
    rng_ = (-1.0 * d, 1.0 * d)
    dense = retrieval_metrics(text @ image.T, qids, gids, similarity_range=rng_, return_per_query=True)
    stream = streaming_retrieval_metrics(
        text, image, qids, gids, query_block_size=qb, gallery_block_size=gb, similarity_range=rng_,
        return_per_query=True,
    )  # fmt: skip
    assert_same(stream, dense, msd_atol=1e-9)


def test_streaming_structured_features_and_errors():
    from dataclasses import dataclass

    @dataclass
    class Feats:
        a: torch.Tensor
        b: torch.Tensor

    rng = np.random.default_rng(0)
    ta, tb, ia, ib = (torch.tensor(rng.integers(-2, 3, size=(n, 3)) / 4, dtype=torch.float32) for n in (9, 9, 13, 13))
    qids, gids = rng.integers(0, 4, 9), rng.integers(0, 4, 13)

    def sim_fn(t, i):
        return (t.a @ i.a.T + t.b @ i.b.T) / 2

    dense = retrieval_metrics(sim_fn(Feats(ta, tb), Feats(ia, ib)), qids, gids, similarity_range=(-3, 3))
    stream = streaming_retrieval_metrics(
        Feats(ta, tb), Feats(ia, ib), qids, gids, similarity_fn=sim_fn, query_block_size=4, gallery_block_size=5,
        similarity_range=(-3, 3),
    )  # fmt: skip
    assert_same(stream, dense, msd_atol=1e-9)
    with pytest.raises(ValueError, match=r"outside similarity_range"):
        streaming_retrieval_metrics(ta * 8, ia * 8, qids, gids, gallery_block_size=4)
    with pytest.raises(ValueError, match="gallery_ids has 12"):
        streaming_retrieval_metrics(ta, ia, qids, gids[:12])


def test_evaluate_modules_offline_agree_with_core(tmp_path):
    rng = np.random.default_rng(3)
    sim = rng.uniform(-1, 1, size=(12, 20))
    qids, gids = rng.integers(0, 6, 12), rng.integers(0, 6, 20)
    core = retrieval_metrics(sim, qids, gids, ks=(1, 3))
    script = f"""
import json, sys, evaluate, numpy as np
sys.path.insert(0, {str(REPO / "src")!r})
from tbps_hf.metrics import load
sim, q, g = np.array({sim.tolist()!r}), {qids.tolist()!r}, {gids.tolist()!r}
out = {{}}
for name in ("rank_k", "map", "msd"):
    kw = dict(ks=(1, 3)) if name == "rank_k" else {{}}
    out["local_" + name] = evaluate.load("metrics/" + name).compute(predictions=sim.tolist(), references=q, gallery_ids=g, **kw)
    out["pkg_" + name] = load(name).compute(predictions=sim.tolist(), references=q, gallery_ids=g, **kw)
print(json.dumps(out))
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    import json

    out = json.loads(run.stdout.strip().splitlines()[-1])
    for where in ("local_", "pkg_"):
        assert out[where + "rank_k"] == pytest.approx({"R@1": core["R@1"], "R@3": core["R@3"]})
        assert out[where + "map"] == pytest.approx({"mAP": core["mAP"], "mINP": core["mINP"]})
        assert out[where + "msd"] == pytest.approx({"mSD": core["mSD"]})


def test_module_bad_input():
    metric = load("msd")
    with pytest.raises(ValueError, match="gallery_ids"):
        metric.compute(predictions=[[0.1, 0.2]], references=[1])
    with pytest.raises(ValueError, match="lengths"):
        metric.compute(predictions=[[0.1, 0.2], [0.3]], references=[1, 2], gallery_ids=[1, 2])


def test_plots_write_pngs(tmp_path):
    ranks = np.array([1, 1, 2, 5, 30, 80])
    p1 = plot_cmc({"model a": ranks, "model b": ranks + 1}, tmp_path / "cmc.png", max_rank=20, title="CMC")
    p2 = plot_cmc(ranks, tmp_path / "one" / "cmc.png", label="a")
    p3 = plot_sd_distribution(np.linspace(0, 1, 50), tmp_path / "sd.png")
    for p in (p1, p2, p3):
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="empty"):
        plot_sd_distribution([], tmp_path / "x.png")


def test_parallel_query_blocks_match_reference_and_keep_thread_count(monkeypatch):
    import tbps_hf.metrics.core as core

    rng = np.random.default_rng(5)
    sim = rng.integers(0, 5, size=(40, 30)).astype(np.float32) / 4 * 2 - 1  # many exact ties
    qids, gids = rng.integers(0, 8, 40), rng.integers(0, 8, 30)
    monkeypatch.setattr(core, "_BLOCK_ELEMENTS", 60)  # 2-row query blocks: many blocks for the worker threads
    threads = torch.get_num_threads()
    got = retrieval_metrics(sim, qids, gids, return_per_query=True)
    assert torch.get_num_threads() == threads  # workers' one-thread setting does not leak to the caller
    assert_same(got, reference_retrieval_metrics(sim, qids, gids))
