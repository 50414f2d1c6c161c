"""UFine6926 (Zuo et al., CVPR 2024): `UFine6926.json`, images at `<file_path>` (e.g. images/1.jpg), train / test."""

from .base import TBPSBenchmarkBuilder

UFINEBENCH_CITATION = """@inproceedings{zuo2024ufinebench,
  title     = {UFineBench: Towards Text-based Person Retrieval with Ultra-fine Granularity},
  author    = {Zuo, Jialong and Zhou, Hanyu and Nie, Ying and Zhang, Feng and Guo, Tianyu and Sang, Nong and Wang, Yunhe and Gao, Changxin},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2024}
}"""
UFINEBENCH_HOMEPAGE = "https://github.com/Zplusdragon/UFineBench"


class Ufine6926(TBPSBenchmarkBuilder):
    """UFine6926: 6,926 identities, 26,206 images, two ultra-fine captions (about 81 words) per image."""

    DATASET_NAME = "ufine6926"
    PRETTY_NAME = "UFine6926"
    ANNOTATION_FILES = ("UFine6926.json",)
    IMAGE_ROOT = ""
    PATH_KEY = "file_path"
    ALLOWED_SPLITS = ("train", "val", "test")
    RECORD_EXAMPLE = '{"split": "train", "id": 1, "file_path": "images/1.jpg", "captions": ["...", "..."]}'
    HOMEPAGE = UFINEBENCH_HOMEPAGE
    REQUEST = "Request UFine6926 from the UFineBench authors (see " + HOMEPAGE + " for the request procedure)."
    DESCRIPTION = (
        "UFine6926: person images each annotated with two ultra fine-grained English descriptions (80.8 words on "
        "average). One row per image; person_id is the raw id of UFine6926.json."
    )
    CITATION = UFINEBENCH_CITATION
    PUBLISHED_SIZES = {
        "all": {"identities": 6926, "images": 26206, "captions": 52412},
        "test": {"identities": 2000, "images": 7629, "captions": 15258},
    }
