"""Rank-k accuracy (R@k) for text-to-image person retrieval, an `evaluate` module over `tbps_hf.metrics.retrieval_metrics`."""

import evaluate

from tbps_hf.metrics.modules import ROW_FEATURES
from tbps_hf.metrics.modules import metrics_from_rows

_DESCRIPTION = """
Rank-k accuracy (R@k) of text-to-image person retrieval. Each prediction is one query's row of similarities to the G gallery
images; each reference is the query's person id; `gallery_ids` (the G gallery person ids) is passed to
`compute`. Ranks follow descending similarity, ties broken by the lower gallery index; queries without a
positive in the gallery are skipped. Values are percentages. See README.md for the definitions.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): [Q, G] similarities, one row per query.
    references (list of int): [Q] person id of each query.
    gallery_ids (list of int): [G] person id of each gallery image (required).
    ks (tuple of int, optional): ranks to report, default (1, 5, 10).
Returns:
    {"R@1", "R@5", "R@10"} (one "R@k" per k in ks) (percent).
Examples:
    >>> metric = evaluate.load("metrics/rank_k")
    >>> metric.compute(predictions=[[0.9, 0.1, 0.3], [0.2, 0.8, 0.7]], references=[1, 2], gallery_ids=[1, 2, 2])
"""

_CITATION = """
@inproceedings{zuo2024ufinebench,
  title={UFineBench: Towards Text-based Person Retrieval with Ultra-fine Granularity},
  author={Zuo, Jialong and Zhou, Hanyu and Nie, Ying and Zhang, Feng and Guo, Tianyu and Sang, Nong and Wang, Yunhe and Gao, Changxin},
  booktitle={CVPR},
  year={2024}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RankK(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=ROW_FEATURES,
            reference_urls=["https://arxiv.org/abs/2312.03441"],
        )

    def _compute(self, predictions, references, gallery_ids=None, ks=(1, 5, 10), similarity_range=(-1.0, 1.0)):
        result = metrics_from_rows(predictions, references, gallery_ids, ks, similarity_range)
        return {key: value for key, value in result.items() if key.startswith("R@")}
