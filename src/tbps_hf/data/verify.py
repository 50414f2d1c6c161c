"""Compare a loaded benchmark's identity / image / caption counts with the published sizes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

QUANTITIES = ("identities", "images", "captions")


@dataclass
class SizeCheck:
    """One published number and the measured one. `split` is a split name or `"all"` (union of the splits)."""

    split: str
    quantity: str
    expected: int
    actual: Optional[int]  # None when the split is absent

    @property
    def ok(self) -> bool:
        return self.actual == self.expected


@dataclass
class VerificationReport:
    """Result of `verify_dataset`: `ok` is True when every published number matches.

    `counts` holds the measured counts per split (and `"all"`); `checks` the comparisons; `differences` the failing
    ones; `notes` anything else worth saying (e.g. no published sizes).
    """

    dataset: str
    counts: dict[str, dict[str, int]]
    checks: list[SizeCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def differences(self) -> list[SizeCheck]:
        return [c for c in self.checks if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "ok": self.ok,
            "counts": self.counts,
            "checks": [{**asdict(c), "ok": c.ok} for c in self.checks],
            "differences": [f"{c.split} {c.quantity}: expected {c.expected}, got {c.actual}" for c in self.differences],
            "notes": self.notes,
        }

    def __str__(self) -> str:
        lines = [f"{self.dataset}: " + ("matches the published sizes" if self.ok and self.checks else
                                         f"{len(self.differences)} difference(s) from the published sizes"
                                         if self.checks else "nothing to compare")]
        lines.append(f"  {'split':<11} {'quantity':<11} {'published':>10} {'measured':>10}")
        for c in self.checks:
            actual = "absent" if c.actual is None else str(c.actual)
            lines.append(f"  {c.split:<11} {c.quantity:<11} {c.expected:>10} {actual:>10}  {'ok' if c.ok else 'DIFFERS'}")
        for split, counts in self.counts.items():
            lines.append(f"  measured {split}: " + ", ".join(f"{counts[q]} {q}" for q in QUANTITIES))
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def count_split(split_dataset) -> dict[str, int]:
    """Identities / images / captions of one split, reading only `person_id` and `captions` (no image decoding)."""
    columns = split_dataset.select_columns(["person_id", "captions"]).to_dict()
    return {
        "identities": len(set(columns["person_id"])),
        "images": len(columns["person_id"]),
        "captions": sum(len(c) for c in columns["captions"]),
    }


def verify_dataset(name: str, dataset_dict) -> VerificationReport:
    """Compare `dataset_dict`'s counts per split (and in total) with `name`'s published sizes.

    Published sizes come from the builders' `PUBLISHED_SIZES` (see `../shared/DESIGN.md` → "Data on disk"); e.g.
    CUHK-PEDES: 13,003 ids / 40,206 images / 80,440 captions in all, test 1,000 / 3,074 / 6,156. Totals count
    identities over the union of the splits.
    """
    from . import BUILDERS, canonical_name

    key = canonical_name(name)
    counts: dict[str, dict[str, int]] = {}
    all_ids: set[int] = set()
    total_images = total_captions = 0
    for split in dataset_dict:
        counts[split] = count_split(dataset_dict[split])
        all_ids.update(dataset_dict[split].unique("person_id"))
        total_images += counts[split]["images"]
        total_captions += counts[split]["captions"]
    counts["all"] = {"identities": len(all_ids), "images": total_images, "captions": total_captions}

    report = VerificationReport(dataset=key, counts=counts)
    published = BUILDERS[key].PUBLISHED_SIZES if key in BUILDERS else {}
    if not published:
        report.notes.append(f"no published sizes for {key}")
    for split, sizes in published.items():
        for quantity in QUANTITIES:
            if quantity in sizes:
                actual = counts[split][quantity] if split in counts else None
                report.checks.append(SizeCheck(split, quantity, sizes[quantity], actual))
    return report
