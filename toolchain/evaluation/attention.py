"""``edgeasr analyze``: seed 001's evidence on an attention (``mha``) model — mean attention maps per layer and WER
with the attention masked to a diagonal band.

Two ways to feed a test utterance through the encoder, chunk by chunk (``chunk_ms``, a multiple of 4 fbank frames
so each chunk gives whole encoder frames):

- ``strict``: seed 001's strict chunk mode. Every chunk runs alone through the full forward (no state, no context
  from earlier chunks; the model's own direction within the chunk, ``l2r`` for the shipped baseline). A map's
  query and key positions are encoder frames relative to the chunk start: ``[C, C]`` for ``C`` encoder frames per
  chunk.
- ``stream``: left-context streaming (``Encoder.step`` with the carried K/V cache of ``left_context`` frames). The
  key axis is relative to the chunk start too, from ``-left_context`` (the oldest cached frame) to ``C - 1``:
  ``[C, left_context + C]``.

The mean map of a layer averages the softmax probabilities over heads, then over every chunk of every utterance
(row by row: a shorter last chunk adds only to its own rows). ``band_mass[k]`` is the fraction of all attention
within ``|query time - key time| <= k`` encoder frames (the main diagonal and ``k`` diagonals on each side);
``mean_distance`` the attention-weighted mean ``|query time - key time|`` in encoder frames (40 ms each with
10 ms fbank frames).

The band mask (``analyze band-mask``) sets the scores outside ``|query time - key time| <= k`` to the mixer's
large negative before the softmax (``MHAMixer.band``, inference only) and decodes the same utterances in the same
chunk mode with greedy CTC; each row has its WER with a 95 % bootstrap interval and the paired-bootstrap ΔWER
against the unmasked model (``edgeasr.evaluation.bootstrap``).
"""
from __future__ import annotations

import base64
import datetime as _dt
import html as _html
import io
import json
from pathlib import Path

import numpy as np

from edgeasr.runtimes.errors import UserError

MODES = ("strict", "stream")
BANDS = tuple(range(1, 9))  # band_mass keys "1".."8"
ATTENTION_SCHEMA = "edgeasr.analyze.attention/1"
BAND_MASK_SCHEMA = "edgeasr.analyze.band-mask/1"


# --- inputs -------------------------------------------------------------------------------------------------------
def parse_diagonals(text: str) -> list[int]:
    """``3,5,7`` -> [3, 5, 7]: each a whole number >= 1 (band half-width in encoder frames), duplicates dropped."""
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not items:
        raise UserError("--diagonals: give at least one band, e.g. 3,5,7")
    out = []
    for t in items:
        try:
            k = int(t)
        except ValueError:
            raise UserError(f"--diagonals: {t!r} is not a whole number (e.g. 3,5,7)") from None
        if k < 1:
            raise UserError(f"--diagonals: each band must be >= 1 diagonal on each side of the main one, got {k}")
        out.append(k)
    return list(dict.fromkeys(out))


def chunk_frames(chunk_ms: float, frame_shift_ms: float = 10.0, subsampling: int = 4) -> int:
    """fbank frames per chunk; a one-line UserError unless ``chunk_ms`` is a positive multiple of one encoder frame
    (``subsampling`` fbank frames: 40 ms at a 10 ms shift)."""
    unit = subsampling * frame_shift_ms
    frames = chunk_ms / frame_shift_ms
    if chunk_ms <= 0 or abs(frames - round(frames)) > 1e-6 or round(frames) % subsampling:
        raise UserError(f"--chunk-ms: {chunk_ms:g} ms is not a positive multiple of {unit:g} ms ({subsampling} fbank "
                        f"frames of {frame_shift_ms:g} ms, one encoder frame)")
    return int(round(frames))


def _select(entries: list, limit: int | None) -> list:
    """Up to ``limit`` entries spread evenly over the manifest (all when ``limit`` is None or 0)."""
    if limit and len(entries) > limit:
        if limit == 1:
            return entries[:1]
        return [entries[round(i * (len(entries) - 1) / (limit - 1))] for i in range(limit)]
    return entries


class Setup:
    """A loaded attention model and the test utterances, validated before anything runs (or is written)."""

    def __init__(self, model: str, test: Path, chunk_ms: float, mode: str, max_utterances: int | None,
                 threads: int = 1):
        import torch

        from edgeasr.data.manifest import read_manifest
        from edgeasr.pretrained import load_model

        if mode not in MODES:
            raise UserError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
        if max_utterances is not None and max_utterances < 1:
            raise UserError(f"--max-utterances must be >= 1, got {max_utterances}")
        test = Path(test)
        if not test.is_file():
            raise UserError(f"{test}: test manifest not found")
        net, config = load_model(model)
        mixer = config["model"]["mixer"]
        mhas = [layer.mixer for layer in net.layers if getattr(layer.mixer, "name", None) == "mha"]
        if not mhas:
            raise UserError(f"{model}: mixer {mixer!r} has no attention (analyze needs an attention model: mha)")
        if mode == "stream" and not net.cfg.causal:
            raise UserError(f"{model}: not stream-capable (trained with causal=False); use --mode strict")
        shift = float(config["features"].get("frame_shift_ms", 10.0))
        self.frames = chunk_frames(chunk_ms, shift, net.cfg.subsampling)
        entries = list(read_manifest(test))  # an empty one: "manifest ... has no usable rows"
        if not entries:
            raise UserError(f"{test}: empty test manifest")
        torch.set_num_threads(max(1, threads))
        self.model, self.net, self.config, self.mixers = model, net.eval(), config, mhas
        chunk_ms = int(chunk_ms) if float(chunk_ms).is_integer() else float(chunk_ms)
        self.test, self.chunk_ms, self.mode, self.shift = test, chunk_ms, mode, shift
        self.entries = _select(entries, max_utterances)
        self.enc_frames = self.frames // net.cfg.subsampling
        self.left_context = mhas[0].left_context
        self._utts = None

    @property
    def utts(self):
        if self._utts is None:
            from edgeasr.runtimes.features import FbankOptions
            from edgeasr.training.dataset import load_utterances

            self._utts = load_utterances(self.entries, FbankOptions.from_dict(self.config["features"]), jobs=1)
        return self._utts

    def describe(self) -> dict:
        return {"model": self.model, "mixer": self.config["model"]["mixer"], "test": str(self.test),
                "utterances": len(self.entries), "chunk_ms": self.chunk_ms, "chunk_frames": self.frames,
                "chunk_encoder_frames": self.enc_frames, "mode": self.mode,
                "direction": self.net.direction if self.mode == "strict" else "l2r (step, left-context cache)",
                "left_context": self.left_context, "encoder_frame_ms": self.shift * self.net.cfg.subsampling}


# --- running the chunks -------------------------------------------------------------------------------------------
def chunk_logprobs(net, feats: np.ndarray, c: int, mode: str) -> np.ndarray:
    """``[T', V]`` log-probs of one utterance fed in chunks of ``c`` fbank frames (``strict`` or ``stream``)."""
    import torch

    f = torch.from_numpy(np.ascontiguousarray(feats, np.float32))
    T, F = f.shape
    n = T // c
    parts = []
    with torch.no_grad():
        if mode == "strict":
            if n:  # the whole chunks as one batch: each row alone, exactly as one chunk per call
                lp = net(f[: n * c].reshape(n, c, F), torch.full((n,), c, dtype=torch.int64))[0]
                parts.append(lp.reshape(-1, lp.shape[-1]))
            if T % c:
                r = T - n * c
                parts.append(net(f[n * c:][None], torch.tensor([r]))[0][0])
        else:
            state = net.initial_state(1)
            for i in range(n):
                lp, _, state = net.step(f[None, i * c:(i + 1) * c], state)
                parts.append(lp[0])
            if T % c:
                rest = f[n * c:]
                pad = -len(rest) % net.cfg.subsampling
                if pad:
                    rest = torch.cat([rest, rest.new_zeros(pad, F)])
                lp, _, state = net.step(rest[None], state)
                parts.append(lp[0])
    if not parts:
        return np.zeros((0, net.cfg.vocab_size), np.float32)
    return torch.cat(parts).numpy()


class _MapSum:
    """Sum of head-averaged attention rows per (query, key) position and the number of rows summed per query."""

    def __init__(self, rows: int, cols: int):
        self.sum = np.zeros((rows, cols), np.float64)
        self.count = np.zeros(rows, np.int64)

    def __call__(self, attn) -> None:  # attn [B, H, Tq, Tk]
        a = attn.double().mean(dim=1).sum(dim=0).numpy()
        q, k = a.shape
        self.sum[:q, :k] += a
        self.count[:q] += attn.shape[0]


def offsets(setup_mode: str, rows: int, cols: int, left_context: int) -> np.ndarray:
    """``[rows, cols]`` query time - key time (encoder frames) of a map's cells."""
    i = np.arange(rows)[:, None]
    j = np.arange(cols)[None, :]
    return i - j if setup_mode == "strict" else i + left_context - j


def attention_maps(setup: Setup, say=None) -> dict:
    """Mean map, band masses and mean distance per layer (the ``attention.json`` content plus the maps)."""
    say = say or (lambda *_: None)
    C, L = setup.enc_frames, setup.left_context
    cols = C if setup.mode == "strict" else L + C
    sums = [_MapSum(C, cols) for _ in setup.mixers]
    try:
        for m, s in zip(setup.mixers, sums):
            m.capture = s
        for n, u in enumerate(setup.utts, 1):
            chunk_logprobs(setup.net, u.feats, setup.frames, setup.mode)
            if n % 20 == 0 or n == len(setup.utts):
                say(f"attention: {n}/{len(setup.utts)} utterances")
    finally:
        for m in setup.mixers:
            m.capture = None
    d = np.abs(offsets(setup.mode, C, cols, L))
    layers, maps = [], []
    for i, s in enumerate(sums):
        rows = max(int(s.count.sum()), 1)
        mean = np.divide(s.sum, np.maximum(s.count, 1)[:, None])
        maps.append(mean)
        layers.append({"layer": i,
                       "band_mass": {str(k): round(float(s.sum[d <= k].sum() / rows), 4) for k in BANDS},
                       "mean_distance": round(float((s.sum * d).sum() / rows), 4)})
    key_first = 0 if setup.mode == "strict" else -L
    return {"layers": layers, "maps": maps, "key_positions": [key_first, key_first + cols - 1],
            "query_rows_per_layer": int(sums[0].count.sum()) if sums else 0}


def decode_wer_pairs(setup: Setup, band: int | None) -> tuple[np.ndarray, list[str]]:
    """Per-utterance (errors, words) and hypotheses with every mha layer masked to ``band`` (None: unmasked)."""
    from edgeasr.evaluation.bootstrap import word_errors
    from edgeasr.runtimes.vocab import BLANK_ID, VOCAB, ctc_greedy

    vocab = setup.config.get("vocab", VOCAB)
    blank = int(setup.config.get("blank_id", BLANK_ID))
    try:
        for m in setup.mixers:
            m.band = band
        hyps = [ctc_greedy(chunk_logprobs(setup.net, u.feats, setup.frames, setup.mode), blank, vocab)
                for u in setup.utts]
    finally:
        for m in setup.mixers:
            m.band = None
    return word_errors([u.text for u in setup.utts], hyps), hyps


def band_mask(setup: Setup, diagonals: list[int], say=None) -> dict:
    from edgeasr.evaluation import bootstrap as B

    say = say or (lambda *_: None)
    rows, base = [], None
    for k in [None, *diagonals]:
        pairs, _ = decode_wer_pairs(setup, k)
        if base is None:
            base = pairs
        row = {"diagonals": k, **B.summary(pairs), **B.delta_summary(base, pairs)}
        rows.append(row)
        say(f"band-mask {'unmasked' if k is None else f'±{k}'}: WER {row['wer']:.2f}% "
            f"[{row['ci95'][0]:.2f}, {row['ci95'][1]:.2f}], ΔWER {row['delta']:+.2f} "
            f"[{row['delta_ci95'][0]:+.2f}, {row['delta_ci95'][1]:+.2f}]")
    return {"schema": BAND_MASK_SCHEMA, "created": _now(), **setup.describe(), "decoder": "greedy CTC",
            "unit": "WER and ΔWER in percent", "band": "keys with |query time - key time| <= k encoder frames "
            "(the main diagonal and k diagonals on each side); the other scores set to a large negative before "
            "the softmax, in every mha layer, at inference only",
            "ci": f"95 % percentile bootstrap over utterances ({B.N_BOOT} samples, seed {B.SEED}); ΔWER paired "
                  "against the unmasked row (same resampled utterances)", "rows": rows}


# --- reports ------------------------------------------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _esc(s) -> str:
    return _html.escape(str(s))


def render_maps(result: dict, setup_info: dict) -> dict[str, bytes]:
    """PNG bytes per layer (``attention_layer{i}.png``) and one grid of all layers (``attention.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm
    from matplotlib.ticker import MaxNLocator

    k0, k1 = result["key_positions"]
    rows = len(result["maps"][0]) if result["maps"] else 0
    extent = (k0 - 0.5, k1 + 0.5, rows - 0.5, -0.5)
    xlabel = "key frame in chunk" if setup_info["mode"] == "strict" else "key frame relative to chunk start"
    pngs = {}

    def draw(ax, i, m):
        # square-root colour scale: the weak off-diagonal mass stays visible beside the first rows' 1.0
        im = ax.imshow(m, extent=extent, cmap="viridis", interpolation="nearest", aspect="auto",
                       norm=PowerNorm(0.5, vmin=0.0, vmax=max(float(np.max(m)), 1e-9)))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        lay = result["layers"][i]
        ax.set_title(f"layer {i}: ±3 {lay['band_mass']['3']:.2f}, dist {lay['mean_distance']:.1f}", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("query frame in chunk", fontsize=8)
        ax.tick_params(labelsize=7)
        return im

    def png(fig) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        return buf.getvalue()

    for i, m in enumerate(result["maps"]):
        fig, ax = plt.subplots(figsize=(4.2 if setup_info["mode"] == "strict" else 6, 3.6))
        fig.colorbar(draw(ax, i, m), ax=ax)
        pngs[f"attention_layer{i}.png"] = png(fig)
    n = len(result["maps"])
    if n:
        ncol = min(3, n)
        nrow = -(-n // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.6 * nrow), squeeze=False)
        for i, m in enumerate(result["maps"]):
            fig.colorbar(draw(axes[i // ncol][i % ncol], i, m), ax=axes[i // ncol][i % ncol])
        for j in range(n, nrow * ncol):
            axes[j // ncol][j % ncol].axis("off")
        fig.suptitle(f"{setup_info['model']}: mean attention, {setup_info['mode']} chunks of "
                     f"{setup_info['chunk_ms']:g} ms, {setup_info['utterances']} utterances", fontsize=10)
        fig.tight_layout()
        pngs["attention.png"] = png(fig)
    return pngs


def attention_html(report: dict, pngs: dict[str, bytes]) -> str:
    heads = "".join(f"<th>±{k}</th>" for k in BANDS)
    trs = "".join(f"<tr><td>{l['layer']}</td>" + "".join(f"<td>{l['band_mass'][str(k)]:.3f}</td>" for k in BANDS) +
                  f"<td>{l['mean_distance']:.2f}</td></tr>" for l in report["layers"])
    imgs = "".join(f'<figure><img alt="{_esc(name)}" src="data:image/png;base64,'
                   f'{base64.b64encode(data).decode("ascii")}"><figcaption>{_esc(name)}</figcaption></figure>'
                   for name, data in sorted(pngs.items(), key=lambda kv: (kv[0] != "attention.png", kv[0])))
    data = json.dumps({k: v for k, v in report.items() if k != "maps"}).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgeasr attention maps</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}figure{{display:inline-block;margin:6px}}
img{{max-width:100%}}</style></head><body>
<h1>Mean attention maps</h1>
<p>Model <code>{_esc(report['model'])}</code>, test set <code>{_esc(report['test'])}</code> ({report['utterances']}
utterances), {_esc(report['mode'])} chunks of {report['chunk_ms']:g} ms ({report['chunk_encoder_frames']} encoder frames
of {report['encoder_frame_ms']:g} ms), direction {_esc(report['direction'])}, left context {report['left_context']}
frames. Averaged over heads, chunks and utterances. Band mass ±k: fraction of attention with |query − key| ≤ k
encoder frames; mean distance in encoder frames.</p>
<table><thead><tr><th>layer</th>{heads}<th>mean distance</th></tr></thead><tbody>{trs}</tbody></table>
<h2>Maps</h2><div>{imgs}</div>
<script type="application/json" id="report">{data}</script>
</body></html>
"""


def attention_report(setup: Setup, say=None) -> tuple[dict, dict[str, bytes], str]:
    """(attention.json content, PNGs, attention.html) — computed and rendered, nothing written yet."""
    result = attention_maps(setup, say)
    info = setup.describe()
    report = {"schema": ATTENTION_SCHEMA, "created": _now(), **info,
              "definitions": {"band_mass": "fraction of attention with |query time - key time| <= k encoder frames",
                              "mean_distance": "attention-weighted mean |query time - key time| in encoder frames",
                              "maps": "per layer [query frame in chunk][key frame - key_positions[0]], averaged "
                                      "over heads, chunks and utterances"},
              "key_positions": result["key_positions"], "query_rows_per_layer": result["query_rows_per_layer"],
              "layers": result["layers"],
              "maps": [[[round(float(v), 5) for v in row] for row in m] for m in result["maps"]]}
    pngs = render_maps(result, info)
    return report, pngs, attention_html(report, pngs)


def write_attention(out: Path, report: dict, pngs: dict[str, bytes], page: str) -> dict[str, Path]:
    from edgeasr.runtimes.files import atomic_write, write_report_files

    paths = write_report_files(out, "attention", {"json": json.dumps(report, indent=1) + "\n", "html": page})
    for name, data in pngs.items():
        paths[name] = Path(out) / name
        atomic_write(paths[name], data)
    return paths


def band_mask_markdown(report: dict) -> str:
    lines = ["# Attention band mask (seed 001)", "",
             f"{report['created']} · model `{report['model']}` · test set {report['test']} ({report['utterances']} "
             f"utterances) · {report['mode']} chunks of {report['chunk_ms']:g} ms · {report['decoder']}.", "",
             f"Band ±k: {report['band']}. {report['ci']}.", "",
             "| diagonals (±k) | WER % | 95 % CI | ΔWER | ΔWER 95 % CI | significant |", "|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {'unmasked' if r['diagonals'] is None else r['diagonals']} | {r['wer']:.2f} | "
                     f"{r['ci95'][0]:.2f}–{r['ci95'][1]:.2f} | {r['delta']:+.2f} | "
                     f"{r['delta_ci95'][0]:+.2f}–{r['delta_ci95'][1]:+.2f} | "
                     f"{'-' if r['diagonals'] is None else 'yes' if r['significant'] else 'no'} |")
    return "\n".join(lines) + "\n"


def band_mask_html(report: dict) -> str:
    trs = "".join(
        f"<tr><td>{'unmasked' if r['diagonals'] is None else '±' + str(r['diagonals'])}</td><td>{r['wer']:.2f}</td>"
        f"<td>{r['ci95'][0]:.2f}–{r['ci95'][1]:.2f}</td><td>{r['delta']:+.2f}</td>"
        f"<td>{r['delta_ci95'][0]:+.2f}–{r['delta_ci95'][1]:+.2f}</td>"
        f"<td>{'-' if r['diagonals'] is None else 'yes' if r['significant'] else 'no'}</td></tr>" for r in report["rows"])
    data = json.dumps(report).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgeasr band mask</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1000px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}</style></head><body>
<h1>Attention band mask</h1>
<p>Model <code>{_esc(report['model'])}</code>, test set <code>{_esc(report['test'])}</code> ({report['utterances']}
utterances), {_esc(report['mode'])} chunks of {report['chunk_ms']:g} ms, {_esc(report['decoder'])}.
Band ±k: {_esc(report['band'])}. {_esc(report['ci'])}. A ΔWER whose interval holds 0 is not significant.</p>
<table><thead><tr><th>diagonals (±k)</th><th>WER %</th><th>95 % CI</th><th>ΔWER</th><th>ΔWER 95 % CI</th>
<th>significant</th></tr></thead><tbody>{trs}</tbody></table>
<script type="application/json" id="report">{data}</script>
</body></html>
"""


def write_band_mask(out: Path, report: dict) -> dict[str, Path]:
    from edgeasr.runtimes.files import write_report_files

    return write_report_files(out, "band_mask", {"json": json.dumps(report, indent=2) + "\n",
                                                 "md": band_mask_markdown(report), "html": band_mask_html(report)})
