"""Word-LM beam search: IRSTLM builds the LM, flashlight-text's lexicon decoder (KenLM inside) searches it, the
same decoder streams chunk by chunk, and the CLI threads `--lm` through eval, transcribe (every backend) and tune."""
import json
import stat

import numpy as np
import pytest

from edgeasr.runtimes.errors import UserError
from edgeasr.runtimes.lm_decoder import WordLM
from edgeasr.runtimes.vocab import BLANK_ID, VOCAB, encode
from edgeasr.evaluation.lm import build_lm

from test_train_cli import EDGEASR, ROOT, run

PSALM = ["the lord is my shepherd i shall not want", "he maketh me to lie down in green pastures",
         "he leadeth me beside the still waters", "he restoreth my soul",
         "in the beginning god created the heaven and the earth", "and the earth was without form and void"]


def spelled(text: str, confusions: dict[int, int] | None = None) -> np.ndarray:
    """CTC log-probs that spell ``text`` (2 frames per character, a blank after each); ``confusions`` maps a
    character position to a wrong character that outscores the right one there (what a weak acoustic model does)."""
    rows = []
    for k, c in enumerate(encode(text)):
        for _ in range(2):
            p = np.full(len(VOCAB), 1e-4)
            if confusions and k in confusions:
                p[confusions[k]], p[c] = 0.55, 0.4
            else:
                p[c] = 0.95
            rows.append(p / p.sum())
        blank = np.full(len(VOCAB), 1e-4)
        blank[BLANK_ID] = 0.95
        rows.append(blank / blank.sum())
    return np.log(np.array(rows, np.float32).reshape(-1, len(VOCAB)))


@pytest.fixture(scope="module")
def psalm_lm(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "psalm"
    build_lm(PSALM, out, order=3)
    return out


def test_build_writes_an_lm_directory(psalm_lm, tmp_path):
    info = json.loads((psalm_lm / "lm.json").read_text())
    assert info["format"] == "edgeasr-lm" and info["order"] == 3 and info["sentences"] == len(PSALM)
    words = (psalm_lm / "words.txt").read_text().split()
    assert words == sorted({w for s in PSALM for w in s.split()})
    arpa = (psalm_lm / "lm.arpa").read_text()
    assert arpa.lstrip().startswith("\\data\\") and "\\3-grams:" in arpa and "shepherd" in arpa
    assert stat.S_IMODE(psalm_lm.stat().st_mode) & 0o055  # not left private by mkdtemp
    assert not [p for p in psalm_lm.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left behind

    # --exclude through the CLI: the held-out sentence and its unique words are gone; rebuilding replaces in place
    manifest = tmp_path / "test.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": "x.wav", "text": "He restoreth my SOUL.", "duration": 1}) + "\n")
    text = tmp_path / "text.txt"
    text.write_text("\n".join(PSALM) + "\n")
    out = tmp_path / "lm"
    for _ in range(2):
        p = run(EDGEASR + ["lm", "build", "--text", str(text), "--exclude", str(manifest), "--out", str(out)])
        summary = json.loads(p.stdout.strip().splitlines()[-1])
        assert summary["excluded_sentences"] == 1 and summary["sentences"] == len(PSALM) - 1
    assert "restoreth" not in (out / "words.txt").read_text().split()


def test_lm_fixes_what_greedy_misspells(psalm_lm):
    from edgeasr.runtimes.vocab import ctc_greedy

    text = "he leadeth me beside the still waters"
    wrong = {text.index("still") + 2: VOCAB.index("e"), text.index("leadeth") + 1: VOCAB.index("a")}
    lp = spelled(text, wrong)
    assert ctc_greedy(lp) == "he laadeth me beside the stell waters"
    lm = WordLM(psalm_lm, VOCAB, BLANK_ID)
    assert lm.decode(lp) == text
    assert lm.decode(spelled("")) == ""


@pytest.mark.parametrize("chunk", [1, 3, 7, 40])
def test_streaming_decoder_equals_whole_utterance(psalm_lm, chunk):
    lm = WordLM(psalm_lm, VOCAB, BLANK_ID)
    text = "in the beginning god created the heaven and the earth"
    lp = spelled(text, {5: VOCAB.index("o")})
    d = lm.new_decoder(VOCAB, BLANK_ID)
    partials = []
    for i in range(0, len(lp), chunk):
        if d.accept(lp[i:i + chunk]):
            partials.append(d.text)
    d.finish()
    assert d.text == lm.decode(lp) == text
    assert partials and all(text.startswith(p) for p in partials[-3:])
    with pytest.raises(UserError, match="already finished"):
        d.accept(lp[:1])
    d.reset()  # a new utterance on the same decoder
    d.accept(spelled("he restoreth my soul"))
    d.finish()
    assert d.text == "he restoreth my soul"


def test_long_streams_commit_and_prune(psalm_lm):
    """Past PRUNE_EVERY frames the decoder commits old words and drops their search space: same words out."""
    lm = WordLM(psalm_lm, VOCAB, BLANK_ID)
    d = lm.new_decoder()
    d.PRUNE_EVERY, d.LOOK_BACK = 30, 10
    text = " ".join(PSALM[:4])
    lp = spelled(text)
    for i in range(0, len(lp), 4):
        d.accept(lp[i:i + 4])
    d.finish()
    assert d.text == text and len(lp) > 10 * d.PRUNE_EVERY


def test_small_text_builds_with_witten_bell(tmp_path):
    """A text too small for improved Kneser-Ney's discounts at the default order (IRSTLM writes no model there) still
    gives a working LM: Witten-Bell, recorded in lm.json. Three verses are enough for improved Kneser-Ney at 3."""
    verses = [PSALM[0], PSALM[1], PSALM[3]]
    info = build_lm(verses, tmp_path / "lm")
    assert info["order"] == 4 and info["smoothing"] == "witten-bell"
    assert "\\4-grams:" in (tmp_path / "lm" / "lm.arpa").read_text()
    lm = WordLM(tmp_path / "lm", VOCAB, BLANK_ID)
    assert lm.decode(spelled("he restoreth my soul", {3: VOCAB.index("a")})) == "he restoreth my soul"
    assert build_lm(verses, tmp_path / "lm3", order=3)["smoothing"] == "improved-kneser-ney"


def test_bad_lm_inputs_are_one_line_errors(psalm_lm, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="not an LM directory"):
        WordLM(tmp_path, VOCAB, BLANK_ID)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("lm.json", "words.txt"):
        (broken / name).write_bytes((psalm_lm / name).read_bytes())
    (broken / "lm.arpa").write_text("\\data\\\nngram 1=zz\n")
    with pytest.raises(UserError, match="KenLM cannot read it"):
        WordLM(broken, VOCAB, BLANK_ID)
    with pytest.raises(UserError, match="vocabulary differs"):
        WordLM(psalm_lm, VOCAB, BLANK_ID).new_decoder(list(VOCAB[:-1]), BLANK_ID)
    with pytest.raises(UserError, match="no text left"):
        build_lm(["", "  "], tmp_path / "empty")
    with pytest.raises(UserError, match="not an LM directory; choose another"):
        build_lm(PSALM, ROOT / "tests")
    monkeypatch.setattr("edgeasr.evaluation.lm.IRSTLM_DIRS", ("/nonexistent",))
    monkeypatch.delenv("IRSTLM", raising=False)
    with pytest.raises(UserError, match="install the Debian package irstlm"):
        build_lm(PSALM, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_tune_eval_and_transcribe_with_an_lm(corpus, tmp_path):
    """The shipped model on real TTS audio: an LM that knows the sentences can only help; tune records weights;
    transcribe streams through the step graph with the same LM."""
    texts = tmp_path / "text.txt"
    texts.write_text("".join(json.loads(line)["text"] + "\n" for split in ("train", "dev", "test")
                             for line in (corpus / f"{split}.jsonl").read_text().splitlines()))
    lm = tmp_path / "lm"
    run(EDGEASR + ["lm", "build", "--text", str(texts), "--out", str(lm)])

    p = run(EDGEASR + ["lm", "tune", str(lm), "--model", "default", "--dev", str(corpus / "dev.jsonl"),
                       "--direction", "bi"])
    best = json.loads(p.stdout.strip().splitlines()[-1])
    weights = json.loads((lm / "lm.json").read_text())["weights"]
    assert weights["lm_weight"] == best["lm_weight"] and weights["tuned_on"].startswith(str(corpus / "dev.jsonl"))
    assert json.loads((lm / "lm.json").read_text())["order"] == 4 and weights["beam_size"] == 512  # the defaults
    assert best["wer"] <= best["greedy_wer"]

    p = run(EDGEASR + ["eval", "default", "--test", str(corpus / "test.jsonl"), "--direction", "bi,l2r", "--lm",
                       str(lm), "--json"])
    rows = {(r["direction"], r["decoder"]): r for r in json.loads(p.stdout)}
    assert set(rows) == {(d, dec) for d in ("bi", "l2r") for dec in ("greedy", "lm")}
    assert rows["bi", "lm"]["wer"] < rows["bi", "greedy"]["wer"]

    wav = next((corpus / "wavs" / "test").glob("*.wav"))
    step = tmp_path / "step.onnx"
    run(EDGEASR + ["export", "default", "--kind", "step", "--out", str(step)])
    outs = [json.loads(run(EDGEASR + ["transcribe", str(step), str(wav), "--stream", "--json", *extra]).stdout)
            for extra in ([], ["--lm", str(lm)])]
    assert [o["decoder"] for o in outs] == ["greedy", "lm"]
    vocab = set((lm / "words.txt").read_text().split())
    assert outs[1]["text"] and set(outs[1]["text"].split()) <= vocab  # every LM hypothesis is LM words

    # eval of the deployed graph (its own l2r mode, ONNX Runtime) scores what the checkpoint scores in l2r
    p = run(EDGEASR + ["eval", str(step), "--test", str(corpus / "test.jsonl"), "--lm", str(lm), "--json"])
    onnx_rows = {(r["direction"], r["decoder"]): r for r in json.loads(p.stdout)}
    assert set(onnx_rows) == {("l2r", "greedy"), ("l2r", "lm")}
    for key, r in onnx_rows.items():
        assert abs(r["wer"] - rows[key]["wer"]) <= 1.0, (key, r, rows[key])  # fp32: at most a near-tie flips
    p = run(EDGEASR + ["eval", str(step), "--test", str(corpus / "test.jsonl"), "--direction", "bi"], check=False)
    assert p.returncode == 2 and "exported in l2r mode" in p.stderr and len(p.stderr.strip().splitlines()) == 1

    # tuning on the deployed graph (an l2r step export on ONNX Runtime) decodes that graph's own log-probs
    # ... at a beam of its own, which every later --lm decode uses
    p = run(EDGEASR + ["lm", "tune", str(lm), "--model", str(step), "--dev", str(corpus / "dev.jsonl"),
                       "--beam-size", "64"])
    onnx_best = json.loads(p.stdout.strip().splitlines()[-1])
    weights = json.loads((lm / "lm.json").read_text())["weights"]
    assert weights["tuned_on"] == f"{corpus / 'dev.jsonl'} ({step}, l2r)" and weights["tuned_wer"] == onnx_best["wer"]
    assert onnx_best["beam_size"] == weights["beam_size"] == 64
    assert onnx_best["wer"] <= onnx_best["greedy_wer"]
    for bad, why in ((["--model", str(step), "--direction", "bi"], "exported in l2r mode"),
                     (["--model", "default", "--backend", "openvino"], "--backend is for ONNX models")):
        p = run(EDGEASR + ["lm", "tune", str(lm), "--dev", str(corpus / "dev.jsonl"), *bad], check=False)
        assert p.returncode == 2 and why in p.stderr and len(p.stderr.strip().splitlines()) == 1

    p = run(EDGEASR + ["transcribe", str(step), str(wav), "--lm", str(tmp_path)], check=False)
    assert p.returncode == 2 and "not an LM directory" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_grid_edges_names_tuned_values_on_the_boundary():
    from edgeasr.evaluation.lm import grid_edges

    assert grid_edges({"lm_weight": 2.0, "word_score": -1.0}) == []
    assert grid_edges({"lm_weight": 2.0, "word_score": -2.0}) == []
    assert grid_edges({"lm_weight": 2.0, "word_score": -3.0}) == ["word_score -3"]
    assert grid_edges({"lm_weight": 5.0, "word_score": 1.0}) == ["lm_weight 5", "word_score 1"]
    assert grid_edges({"lm_weight": 0.5, "word_score": 0.0}) == ["lm_weight 0.5"]
