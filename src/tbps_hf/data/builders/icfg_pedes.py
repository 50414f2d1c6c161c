"""ICFG-PEDES (Ding et al., 2021): `ICFG-PEDES.json` (some releases `ICFG_PEDES.json`) + `imgs/`, train / test."""

from .base import TBPSBenchmarkBuilder


class IcfgPedes(TBPSBenchmarkBuilder):
    """ICFG-PEDES: 4,102 identities, 54,522 images, one caption per image (from MSMT17)."""

    DATASET_NAME = "icfg-pedes"
    PRETTY_NAME = "ICFG-PEDES"
    ANNOTATION_FILES = ("ICFG-PEDES.json", "ICFG_PEDES.json")
    IMAGE_ROOT = "imgs"
    PATH_KEY = "file_path"
    ALLOWED_SPLITS = ("train", "test")
    RECORD_EXAMPLE = (
        '{"split": "train", "captions": ["The woman ..."], "file_path": "train/0001/0001_000_01_0303morning_0008_0.jpg", '
        '"processed_tokens": [[...]], "id": 1}'
    )
    HOMEPAGE = "https://github.com/zifyloo/SSAN"
    REQUEST = "Request ICFG-PEDES from the SSAN authors (see " + HOMEPAGE + " for the request procedure)."
    DESCRIPTION = (
        "ICFG-PEDES: MSMT17 person crops, each with one identity-centric fine-grained English description. "
        "One row per image; person_id is the raw id of the annotation file."
    )
    CITATION = """@article{ding2021semantically,
  title   = {Semantically Self-Aligned Network for Text-to-Image Part-aware Person Re-identification},
  author  = {Ding, Zefeng and Ding, Changxing and Shao, Zhiyin and Tao, Dacheng},
  journal = {arXiv preprint arXiv:2107.12666},
  year    = {2021}
}"""
    PUBLISHED_SIZES = {
        "all": {"identities": 4102, "images": 54522, "captions": 54522},
        "test": {"identities": 1000, "images": 19848},
    }
