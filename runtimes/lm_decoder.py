"""Word n-gram LM + lexicon beam search over CTC log-probs, streaming or whole-utterance (numpy, no torch).

The search is flashlight-text's ``LexiconDecoder`` with its built-in KenLM: the decoder torchaudio's
``ctc_decoder`` wraps, here without torch so it runs on the device. Words are spelled with the model's own
characters (no space inside a spelling: the space token is the decoder's word separator, which scored 19.1 % dev
WER against 20.0 % with the space spelled at the end of each word), and every hypothesis is a sequence of LM words,
so the LM's word list is also the recognisable vocabulary.

An LM directory (``edgeasr lm build``) holds ``lm.arpa`` (ARPA n-gram), ``words.txt`` (one word per line) and
``lm.json`` (provenance and the decoding weights ``edgeasr lm tune`` measured on a dev set).
"""
from __future__ import annotations

import json
import math
import os
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from edgeasr.runtimes.errors import UserError

ARPA_FILE = "lm.arpa"
WORDS_FILE = "words.txt"
INFO_FILE = "lm.json"
LM_FORMAT = "edgeasr-lm"
WORD_SEPARATOR = " "


@dataclass(frozen=True)
class DecodeWeights:
    """Shallow-fusion weights: score = acoustic + lm_weight * LM + word_score * words."""
    lm_weight: float = 3.0  # the dev-set optimum for the shipped flagship on the KJV LM (edgeasr lm tune)
    word_score: float = -1.0
    # rwkv-chunk-bi streaming at 320+320 ms, KJV 4-gram, held-out test: beam 128 18.6 %, 512 17.1 % WER at three
    # times the decode time (RTF 0.004 -> 0.012 on one core); 1024 gains 0.1 point on dev for 3.5x more
    # (docs/models.md)
    beam_size: int = 512
    beam_threshold: float = 25.0

    @classmethod
    def from_dict(cls, d: dict) -> "DecodeWeights":
        return cls(**{f.name: type(getattr(cls, f.name))(d[f.name]) for f in fields(cls) if f.name in d})

    def to_dict(self) -> dict:
        return asdict(self)


def _flashlight():
    try:
        from flashlight.lib.text import decoder as fl
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary
    except ImportError:
        raise UserError("LM decoding needs flashlight-text: pip install flashlight-text") from None
    return fl, KenLM, Dictionary


@contextmanager
def _quiet_stderr():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def read_lm_info(lm_dir: str | Path) -> dict:
    """``lm.json`` of an LM directory, with a one-line error when the directory is not one."""
    d = Path(lm_dir)
    for name in (INFO_FILE, ARPA_FILE, WORDS_FILE):
        if not (d / name).is_file():
            raise UserError(f"{d}: not an LM directory (no {name}; make one with `edgeasr lm build`)")
    try:
        info = json.loads((d / INFO_FILE).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{d / INFO_FILE}: unreadable ({e})") from None
    if not isinstance(info, dict) or info.get("format") != LM_FORMAT:
        raise UserError(f"{d / INFO_FILE}: not an edgeasr LM description (format != {LM_FORMAT!r})")
    return info


class WordLM:
    """An LM directory loaded once for a model's vocabulary; ``new_decoder`` makes one decoder per stream."""

    def __init__(self, lm_dir: str | Path, vocab, blank_id: int, weights: DecodeWeights | None = None):
        fl, KenLM, Dictionary = _flashlight()
        self.dir = Path(lm_dir)
        self.info = read_lm_info(self.dir)
        self.weights = weights or DecodeWeights.from_dict(self.info.get("weights", {}))
        self.vocab, self.blank_id = list(vocab), int(blank_id)
        if WORD_SEPARATOR not in self.vocab:
            raise UserError("LM decoding needs a model whose vocabulary has a space (word separator) token")
        index = {c: i for i, c in enumerate(self.vocab)}
        self.sep_id = index[WORD_SEPARATOR]
        words = [w for w in (self.dir / WORDS_FILE).read_text().split() if w]
        spellable = [w for w in words if all(c in index and c != WORD_SEPARATOR for c in w)
                     and w not in ("<s>", "</s>", "<unk>")]
        self.unspellable = len(words) - len(spellable)
        if not spellable:
            raise UserError(f"{self.dir / WORDS_FILE}: no word is spelled with the model's characters")
        self.words = Dictionary()
        for w in ("<s>", "</s>", "<unk>", *spellable):
            self.words.add_entry(w)
        self.unk_id = self.words.get_index("<unk>")
        self.words.set_default_index(self.unk_id)
        try:
            with _quiet_stderr():  # KenLM draws a loading bar on stderr; its errors still arrive as exceptions
                self.lm = KenLM(str(self.dir / ARPA_FILE), self.words)
        except Exception as e:  # KenLM raises its own C++ errors for a malformed ARPA
            raise UserError(f"{self.dir / ARPA_FILE}: KenLM cannot read it ({str(e).splitlines()[0][:200]})") from None
        # The trie holds every spelling; each node carries its best unigram score (smearing) so the beam can
        # rank a half-spelled word before the word is complete.
        self.trie = fl.Trie(len(self.vocab), self.sep_id)
        start = self.lm.start(False)
        for w in spellable:
            wid = self.words.get_index(w)
            _, score = self.lm.score(start, wid)
            self.trie.insert([index[c] for c in w], wid, score)
        self.trie.smear(fl.SmearingMode.MAX)
        self._fl = fl

    def options(self):
        w = self.weights
        return self._fl.LexiconDecoderOptions(
            beam_size=int(w.beam_size), beam_size_token=len(self.vocab), beam_threshold=float(w.beam_threshold),
            lm_weight=float(w.lm_weight), word_score=float(w.word_score), unk_score=-math.inf, sil_score=0.0,
            log_add=False, criterion_type=self._fl.CriterionType.CTC)

    def new_decoder(self, vocab=None, blank_id: int | None = None) -> "LexiconStreamDecoder":
        """A decoder for one stream; ``vocab``/``blank_id`` (from a session's metadata) must match the LM's."""
        if vocab is not None and list(vocab) != self.vocab:
            raise UserError("the model's vocabulary differs from the one this LM decoder was built for")
        if blank_id is not None and int(blank_id) != self.blank_id:
            raise UserError(f"the model's blank id {blank_id} differs from the LM decoder's {self.blank_id}")
        return LexiconStreamDecoder(self)

    def decode(self, logprobs: np.ndarray) -> str:
        """Best word sequence for one utterance's ``[T, V]`` log-probs."""
        d = self.new_decoder()
        d.accept(logprobs)
        d.finish()
        return d.text


class LexiconStreamDecoder:
    """Same interface as ``runtimes.session.CtcStreamDecoder``: ``accept`` chunks, read ``text``, ``finish``.

    Partial text is the best hypothesis's completed words; ``finish`` adds the end-of-sentence LM score, which
    can still change earlier words. Words older than ``LOOK_BACK`` frames are committed every ``PRUNE_EVERY``
    frames (40 ms each after 4x subsampling: every 20 s, keeping the last 4 s open)."""

    PRUNE_EVERY = 500
    LOOK_BACK = 100

    def __init__(self, lm: WordLM):
        self.lm = lm
        self._decoder = lm._fl.LexiconDecoder(lm.options(), lm.trie, lm.lm, lm.sep_id, lm.blank_id, lm.unk_id,
                                              [], False)
        self.reset()

    def reset(self) -> None:
        self._decoder.decode_begin()
        self._committed: list[str] = []
        self._text = ""
        self._finished = False
        self._since_prune = 0
        self.frames = 0

    def accept(self, logprobs: np.ndarray) -> bool:
        if self._finished:
            raise UserError("decoder already finished: reset() it for a new utterance")
        lp = np.ascontiguousarray(logprobs, dtype=np.float32)
        if lp.ndim != 2 or lp.shape[1] != len(self.lm.vocab):
            raise UserError(f"logprobs must be [T, {len(self.lm.vocab)}], got {list(lp.shape)}")
        if not len(lp):
            return False
        self._decoder.decode_step(lp.ctypes.data, lp.shape[0], lp.shape[1])
        self.frames += len(lp)
        self._since_prune += len(lp)
        if self._since_prune >= self.PRUNE_EVERY:
            # Commit the best path up to LOOK_BACK frames ago and drop the rest of the search space there: a long
            # live stream keeps flat memory, and the last LOOK_BACK frames stay open to re-ranking.
            self._committed += self._word_list(self._decoder.get_best_hypothesis(self.LOOK_BACK))
            self._decoder.prune(self.LOOK_BACK)
            self._since_prune = 0
        return self._set(self._committed + self._word_list(self._decoder.get_best_hypothesis(0)))

    def finish(self) -> None:
        if self._finished:
            return
        self._decoder.decode_end()
        hyps = self._decoder.get_all_final_hypothesis()
        if hyps:
            self._set(self._committed + self._word_list(max(hyps, key=lambda h: h.score)))
        self._finished = True

    def _set(self, words: list[str]) -> bool:
        text = " ".join(words)
        changed, self._text = text != self._text, text
        return changed

    def _word_list(self, hyp) -> list[str]:
        return [self.lm.words.get_entry(i) for i in hyp.words if i >= 0 and i != self.lm.unk_id]

    @property
    def text(self) -> str:
        return self._text
