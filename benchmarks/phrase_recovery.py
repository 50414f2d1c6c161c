"""Phrase recovery of the noun-phrase chunker on ProcPEDES fine captions.

An attribute phrase (e.g. "long black hair") is recovered when some extracted noun phrase, lowercased and
tokenized, contains it as a contiguous token span. Prints the figure, the tagger used, and the misses.

    .venv/bin/python benchmarks/phrase_recovery.py --n 2000 --seed 0
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from tbps_hf.data.procpedes import sample_fine_captions
from tbps_hf.processing.phrases import PhraseChunker, phrase_recovery


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="fine captions to sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=30, help="misses to print")
    args = parser.parse_args(argv)

    samples = sample_fine_captions(args.n, seed=args.seed)
    chunker = PhraseChunker()
    start = time.perf_counter()
    recovery, misses = phrase_recovery(samples, chunker)
    seconds = time.perf_counter() - start
    total = sum(len(phrases) for _, phrases in samples)
    print(f"tagger: {chunker.tagger.name}")
    print(f"captions: {len(samples)}  attribute phrases: {total}  chunking time: {seconds:.2f} s")
    print(f"phrase recovery: {100 * recovery:.2f} % ({total - len(misses)}/{total})")
    if misses:
        print(f"\nmost frequent missed phrases: {Counter(p for _, p, _ in misses).most_common(15)}")
        print(f"\nfirst {min(args.show, len(misses))} misses:")
        for caption, phrase, extracted in misses[: args.show]:
            print(f"- missed {phrase!r}\n  caption: {caption}\n  noun phrases: {extracted}")
    return recovery


if __name__ == "__main__":
    main()
