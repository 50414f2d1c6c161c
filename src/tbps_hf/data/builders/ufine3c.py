"""UFine3C (Zuo et al., CVPR 2024): `UFine3C.json`, images at `<file_path>`, one split (test), adds `source`."""

from .base import TBPSBenchmarkBuilder
from .ufine6926 import UFINEBENCH_CITATION, UFINEBENCH_HOMEPAGE


class Ufine3c(TBPSBenchmarkBuilder):
    """UFine3C: cross-domain / cross-granularity / cross-style evaluation set (2,250 ids, 7,446 images, 37,939 texts).

    `source` names the dataset each image comes from (CUHK-PEDES, ICFG-PEDES or UFine6926), so results can be broken
    down by domain (`EvaluationView.query_groups["source"]`).
    """

    DATASET_NAME = "ufine3c"
    PRETTY_NAME = "UFine3C"
    ANNOTATION_FILES = ("UFine3C.json",)
    IMAGE_ROOT = ""
    PATH_KEY = "file_path"
    EXTRA_STRING_KEYS = ("source",)
    ALLOWED_SPLITS = ("test",)
    RECORD_EXAMPLE = (
        '{"id": 1, "source": "CUHK-PEDES", "split": "test", "file_path": "images/...jpg", '
        '"captions": ["...", "...", "..."]}'
    )
    HOMEPAGE = UFINEBENCH_HOMEPAGE
    REQUEST = "Request UFine3C from the UFineBench authors (see " + HOMEPAGE + " for the request procedure)."
    DESCRIPTION = (
        "UFine3C: evaluation set collected from the test sets of CUHK-PEDES, ICFG-PEDES and UFine6926 (750 persons "
        "each), with captions enriched by LLMs in several granularities and styles. One row per image."
    )
    CITATION = UFINEBENCH_CITATION
    PUBLISHED_SIZES = {
        "all": {"identities": 2250, "images": 7446, "captions": 37939},
    }
