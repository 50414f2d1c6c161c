"""A BERT-style WordPiece tokenizer trained on a dataset's captions (for presets that train text towers from scratch).

Built with `tokenizers` and wrapped in `PreTrainedTokenizerFast`, so it saves with ``save_pretrained`` (one
``tokenizer.json``) and reloads with ``AutoTokenizer.from_pretrained``. Not ``BertTokenizerFast(vocab_file=...)``:
on this stack that silently maps every word to ``[UNK]``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4, [PAD] = 0 as in BERT


def train_wordpiece_tokenizer(
    captions: Iterable[str],
    vocab_size: int = 8000,
    min_frequency: int = 1,
    lowercase: bool = True,
) -> PreTrainedTokenizerFast:
    """
    Train a WordPiece tokenizer on ``captions``.

    Args:
        captions: training captions (any iterable of str; empty strings are ignored).
        vocab_size: target size of the vocabulary (special tokens and character pieces included; those are always
            kept, so a tiny ``vocab_size`` can be exceeded) — read ``len(tokenizer)`` and put it in the model config.
        min_frequency: a word must occur at least this often to enter the vocabulary as a whole word.
        lowercase: BERT "uncased" normalization (lowercase + strip accents).

    The same captions always give the same vocabulary and ids (reproducible runs).

    Returns:
        `PreTrainedTokenizerFast` with ``[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4``; encoding adds
        ``[CLS] … [SEP]``; ``model_max_length`` is left for the processor to enforce.
    """
    if isinstance(captions, str):
        raise TypeError("captions must be an iterable of strings, not a single string")
    texts = [c for c in captions if isinstance(c, str) and c.strip()]
    if not texts:
        raise ValueError("train_wordpiece_tokenizer needs at least one non-empty caption")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")

    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # The vocabulary is chosen here rather than by `trainers.WordPieceTrainer`: that trainer breaks ties between
    # equally frequent merges in hash-map order, so the same captions gave different vocabularies (and ids) from run
    # to run. Ours is deterministic: every character (word-initial and "##" continuation, so nothing seen is [UNK]),
    # then whole words by descending frequency (ties alphabetical); unseen words fall back to WordPiece pieces.
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    characters = sorted({ch for word in counts for ch in word})
    pieces = [*characters, *(f"##{ch}" for ch in characters)]
    words = sorted((w for w, n in counts.items() if n >= min_frequency and len(w) > 1), key=lambda w: (-counts[w], w))
    # Character pieces are always kept (nothing seen may become [UNK]); whole words fill the rest of vocab_size.
    vocabulary = [*SPECIAL_TOKENS, *pieces, *words[: max(0, vocab_size - len(SPECIAL_TOKENS) - len(pieces))]]

    tokenizer = Tokenizer(
        models.WordPiece(
            vocab={t: i for i, t in enumerate(vocabulary)}, unk_token="[UNK]", continuing_subword_prefix="##"
        )
    )
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        padding_side="right",
        truncation_side="right",
        do_lower_case=lowercase,
    )


__all__ = ["train_wordpiece_tokenizer", "SPECIAL_TOKENS"]
