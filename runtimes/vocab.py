"""Character vocabulary, text normalisation and greedy CTC decoding (numpy only).

Characters keep the model small and need no tokenizer training; a 29-symbol CTC head is tiny next to the encoder.
"""
from __future__ import annotations

import re
import unicodedata

import numpy as np

BLANK = "<blk>"
VOCAB: tuple[str, ...] = (BLANK, " ", "'", *"abcdefghijklmnopqrstuvwxyz")
BLANK_ID = 0
_INDEX = {c: i for i, c in enumerate(VOCAB)}

_NUMBER_WORDS = "zero one two three four five six seven eight nine".split()


def normalize_text(text: str) -> str:
    """Lower case, ASCII-fold, digits spelled one by one, punctuation dropped, whitespace collapsed.

    The same function feeds training targets and WER references so both sides are scored alike."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"\d", lambda m: f" {_NUMBER_WORDS[int(m.group())]} ", text)
    text = text.replace("-", " ")
    text = re.sub(r"[^a-z' ]+", " ", text)
    text = re.sub(r"(^|\s)'+|'+(\s|$)", " ", text)  # quotes, not apostrophes inside words
    return re.sub(r"\s+", " ", text).strip()


def encode(text: str) -> list[int]:
    return [_INDEX[c] for c in normalize_text(text)]


def decode_ids(ids, vocab: tuple[str, ...] | list[str] = VOCAB) -> str:
    return "".join(vocab[i] for i in ids).strip()


def ctc_greedy(logprobs: np.ndarray, blank_id: int = BLANK_ID, vocab=VOCAB) -> str:
    """Best path over ``[T, V]`` log-probabilities: argmax, merge repeats, drop blanks."""
    best = np.asarray(logprobs).argmax(axis=-1)
    ids = [int(t) for i, t in enumerate(best) if t != blank_id and (i == 0 or t != best[i - 1])]
    return re.sub(r"\s+", " ", decode_ids(ids, vocab))
