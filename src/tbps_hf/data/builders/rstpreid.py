"""RSTPReid (Zhu et al., ACM MM 2021): `data_captions.json` + `imgs/`, splits train / val / test."""

from .base import TBPSBenchmarkBuilder


class Rstpreid(TBPSBenchmarkBuilder):
    """RSTPReid: 4,101 identities, 20,505 images (5 per identity), 2 captions per image."""

    DATASET_NAME = "rstpreid"
    PRETTY_NAME = "RSTPReid"
    ANNOTATION_FILES = ("data_captions.json",)
    IMAGE_ROOT = "imgs"
    PATH_KEY = "img_path"
    ALLOWED_SPLITS = ("train", "val", "test")
    RECORD_EXAMPLE = '{"id": 0, "img_path": "0000_c14_0031.jpg", "captions": ["...", "..."], "split": "train"}'
    HOMEPAGE = "https://github.com/NjtechCVLab/RSTPReid-Dataset"
    REQUEST = "Request RSTPReid from its authors (see " + HOMEPAGE + " for the request procedure)."
    DESCRIPTION = (
        "RSTPReid: MSMT17 person crops (5 per identity, several cameras), each with two English descriptions. "
        "One row per image; person_id is the raw id of data_captions.json."
    )
    CITATION = """@inproceedings{zhu2021dssl,
  title     = {DSSL: Deep Surroundings-person Separation Learning for Text-based Person Retrieval},
  author    = {Zhu, Aichun and Wang, Zijie and Li, Yifeng and Wan, Xili and Jin, Jing and Wang, Tian and Hu, Fangqiang and Hua, Gang},
  booktitle = {ACM International Conference on Multimedia (ACM MM)},
  year      = {2021}
}"""
    PUBLISHED_SIZES = {
        "all": {"identities": 4101, "images": 20505, "captions": 41010},
        "test": {"identities": 200, "images": 1000, "captions": 2000},
    }
