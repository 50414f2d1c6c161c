"""CUHK-PEDES (Li et al., CVPR 2017): `reid_raw.json` + `imgs/`, splits train / val / test, 1-based ids."""

from .base import TBPSBenchmarkBuilder


class CuhkPedes(TBPSBenchmarkBuilder):
    """CUHK-PEDES: 13,003 identities, 40,206 images, 80,440 captions (about 2 per image)."""

    DATASET_NAME = "cuhk-pedes"
    PRETTY_NAME = "CUHK-PEDES"
    ANNOTATION_FILES = ("reid_raw.json",)
    IMAGE_ROOT = "imgs"
    PATH_KEY = "file_path"
    ALLOWED_SPLITS = ("train", "val", "test")
    RECORD_EXAMPLE = (
        '{"split": "train", "captions": ["A man ..."], "file_path": "CUHK01/0363004.png", '
        '"processed_tokens": [[...]], "id": 1}'
    )
    HOMEPAGE = "https://github.com/ShuangLI59/Person-Search-with-Natural-Language-Description"
    REQUEST = (
        "Request CUHK-PEDES from its authors (see " + HOMEPAGE + "; the request goes to the first author by e-mail)."
    )
    DESCRIPTION = (
        "CUHK-PEDES: person crops from CUHK03, Market-1501, SSM, VIPeR and CUHK01, each described by (about) two "
        "free-form English sentences. One row per image; person_id is the raw 1-based id of reid_raw.json."
    )
    CITATION = """@inproceedings{li2017person,
  title     = {Person Search with Natural Language Description},
  author    = {Li, Shuang and Xiao, Tong and Li, Hongsheng and Zhou, Bolei and Yue, Dayu and Wang, Xiaogang},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2017}
}"""
    PUBLISHED_SIZES = {
        "all": {"identities": 13003, "images": 40206, "captions": 80440},
        "test": {"identities": 1000, "images": 3074, "captions": 6156},
    }
