"""Sentences for the TTS corpus, from public-domain text that is available offline.

Source: the King James Bible (public domain), Debian `bible-kjv-text` (the data) read by Debian `bible-kjv` (the
`bible` command). Verses are split into sentences/clauses of 4-20 words, normalised with `normalize_text`
(the same normaliser as training targets and WER references), deduplicated, and returned in a deterministic order
(order of first appearance in the text). Nothing is cached on disk.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from functools import lru_cache

from edgeasr.runtimes.errors import UserError
from edgeasr.runtimes.vocab import normalize_text

MIN_WORDS = 4
MAX_WORDS = 20
_ALL_VERSES = "gen1:1-rev22:21"
_VERSE_LINE = re.compile(r"^\s*\d+\s+(.*\S)\s*$")


def kjv_verses() -> list[str]:
    """Every verse of the KJV as one line of raw text, in canonical order."""
    exe = shutil.which("bible")
    if exe is None:
        raise UserError("the `bible` command is missing: install the Debian packages bible-kjv and bible-kjv-text")
    try:
        out = subprocess.run([exe, "-l100000", _ALL_VERSES], check=True, capture_output=True, timeout=120,
                             env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "COLUMNS": "100000"}).stdout
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        raise UserError(f"`bible` failed to dump the KJV text: {' '.join(str(e).split())}") from None
    verses = [m.group(1) for line in out.decode("latin-1").splitlines() if (m := _VERSE_LINE.match(line))]
    if len(verses) < 30000:
        raise UserError(f"`bible` returned only {len(verses)} verses (expected 31102): is bible-kjv-text complete?")
    return verses


def split_clauses(text: str, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> list[str]:
    """Split raw text into sentences at . ; : ? ! and break longer ones at commas, merging pieces greedily so
    each piece has at most ``max_words`` words. Returns normalised pieces with ``min_words..max_words`` words."""
    out: list[str] = []
    for sent in re.split(r"[.;:?!]+", text):
        parts = [normalize_text(p) for p in sent.split(",")]
        parts = [p for p in parts if p]
        cur: list[str] = []
        for p in parts:
            words = p.split()
            if cur and len(cur) + len(words) > max_words:
                out.append(" ".join(cur))
                cur = []
            cur.extend(words)
        if cur:
            out.append(" ".join(cur))
    return [s for s in out if min_words <= len(s.split()) <= max_words]


@lru_cache(maxsize=2)
def _sentences(min_words: int, max_words: int) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for verse in kjv_verses():
        for s in split_clauses(verse, min_words, max_words):
            seen.setdefault(s, None)
    return tuple(seen)


def sentences(min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> list[str]:
    """Distinct normalised sentences (thousands), deterministic order. Cached in memory for the process only."""
    return list(_sentences(min_words, max_words))


if __name__ == "__main__":
    s = sentences()
    print(len(s), "sentences;", sum(len(x.split()) for x in s) / len(s), "words on average")
    print("\n".join(s[:10]))
