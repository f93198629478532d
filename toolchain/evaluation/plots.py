"""The figures of the parity and bench pages, drawn with matplotlib (the ``[eval]`` extra) and returned as inline
SVG, so a page stays one self-contained file.

A device install has only the base dependencies: there ``parity_figures`` / ``bench_figures`` return None and the
pages say ``MISSING`` in one line instead of a traceback. matplotlib is imported on first use, with the Agg backend
(no display, no GUI loop in a report writer).
"""
from __future__ import annotations

import io
import math
import re
from html import escape

MISSING = "Plots need matplotlib: pip install 'edgeasr[eval]'"

BACKEND_COLORS = {"torch": "#555555", "ort": "#1f77b4", "openvino": "#8e44ad", "tensorrt": "#2ca02c",
                  "ort-cuda": "#17becf", "pocketsphinx": "#d35400"}
PRECISION_STYLE = {"fp32": {"alpha": 1.0, "hatch": ""}, "bf16": {"alpha": 0.75, "hatch": "//"},
                   "fp16": {"alpha": 0.75, "hatch": ".."}, "int8": {"alpha": 0.5, "hatch": "xx"}}
SERIES_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
WIDTH_IN = 7.5  # 720 px: one figure per row at 1024 px, two side by side at 1400 px and up
ROW_IN = 0.42  # per bar: two label lines (model; backend · precision · mode)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _svg(plt, fig, caption: str) -> str:
    """``<figure class="plot">`` with the figure as inline SVG (text kept as text: small and searchable)."""
    buf = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML declaration and doctype: this goes inside HTML
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)  # matplotlib's RDF block: dead weight here
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{escape(caption)}" ', 1)
    return f'<figure class="plot">{svg}<figcaption>{escape(caption)}</figcaption></figure>'


def _style_axes(ax) -> None:
    ax.grid(axis="x", color="#e5e5e5")
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


# --- parity ------------------------------------------------------------------------------------------------------
def cell_label(c: dict) -> str:
    mode = c["mode"] + (" chunk-bi" if c.get("direction") == "chunk-bi" else "")
    return f"{c['model']}\n{c['backend']} · {c['precision']} · {mode}"


def _measured(report: dict) -> list[dict]:
    """Reference rows first, the peer last: the order of the tables."""
    cells = [c for c in report["cells"] if c["status"] in ("ok", "reference")]
    return sorted(cells, key=lambda c: (c["role"] == "peer", c["status"] != "reference"))


def _panels(plt, groups: list[list[dict]], titles: list[str]):
    """One horizontal-bar panel per non-empty group, each with its own x scale (the peer's numbers would squash
    ours to slivers on a shared one); heights follow the number of rows."""
    keep = [(g, t) for g, t in zip(groups, titles) if g]
    fig, axes = plt.subplots(len(keep), 1, squeeze=False, figsize=(WIDTH_IN, 0.9 + sum(
        ROW_IN * len(g) + 0.5 for g, _ in keep)), gridspec_kw={"height_ratios": [len(g) + 1.2 for g, _ in keep]})
    out = []
    for ax, (g, t) in zip(axes[:, 0], keep):
        _style_axes(ax)
        ax.set_yticks(range(len(g)), [cell_label(c) for c in g], fontsize=7.5)
        ax.set_ylim(len(g) - 0.5, -0.5)
        if t:
            ax.set_title(t, fontsize=9, loc="left")
        out.append((ax, g))
    return fig, out


def _look(c: dict) -> dict:
    """Fill colour by backend, lighter and hatched by precision."""
    st = PRECISION_STYLE.get(c["precision"], PRECISION_STYLE["fp32"])
    return {"facecolor": BACKEND_COLORS.get(c["backend"], "#999999"), "alpha": st["alpha"], "hatch": st["hatch"],
            "hatchcolor": "#333333"}


def _bars(ax, cells: list[dict], values: list[float], failed=()) -> None:
    for i, (c, v) in enumerate(zip(cells, values)):
        bad = c["id"] in failed
        ax.barh(i, v, height=0.62, edgecolor="#c0392b" if bad else "#333333", linewidth=2 if bad else 0.5,
                **_look(c))


def _legend(fig, cells: list[dict], extra=()) -> None:
    """One legend under the figure (inside, it covers bars): backends, precisions, and ``extra`` handles."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=BACKEND_COLORS.get(b, "#999999"), edgecolor="#333333", linewidth=0.5, label=b)
               for b in dict.fromkeys(c["backend"] for c in cells)]
    precisions = list(dict.fromkeys(c["precision"] for c in cells))
    if len(precisions) > 1:
        handles += [Patch(**{**_look({"backend": "", "precision": p}), "facecolor": "#bbbbbb"}, edgecolor="#333333",
                          linewidth=0.5, label=p) for p in precisions]
    handles += list(extra)
    rows = math.ceil(len(handles) / 8)
    fig.legend(handles=handles, fontsize=7.5, loc="lower center", ncol=math.ceil(len(handles) / rows),
               frameon=False)
    fig.tight_layout(rect=(0, 0.25 * rows / fig.get_figheight(), 1, 1))


def _ci_err(values: list[float], cis: list) -> list[list[float]]:
    """matplotlib's asymmetric error bars from [lo, hi] intervals (0 where a cell has none; a percentile bootstrap
    interval need not hold its point estimate, and matplotlib refuses negative lengths)."""
    lo = [max(0.0, v - ci[0]) if ci else 0.0 for v, ci in zip(values, cis)]
    hi = [max(0.0, ci[1] - v) if ci else 0.0 for v, ci in zip(values, cis)]
    return [lo, hi]


def _value_labels(ax, values: list[float], ends: list[float], fmt: str, span: float) -> None:
    for i, (v, end) in enumerate(zip(values, ends)):
        ax.text(end + (0.015 * span if end >= 0 else -0.015 * span), i, format(v, fmt), va="center",
                ha="left" if end >= 0 else "right", fontsize=7.5)


def parity_wer(plt, report: dict) -> str | None:
    cells = _measured(report)
    if not cells:
        return None
    fig, [(ax, _)] = _panels(plt, [cells], [""])
    wer = [100 * c["metrics"]["wer"] for c in cells]
    cis = [[100 * x for x in c["metrics"]["wer_ci95"]] if c["metrics"].get("wer_ci95") else None for c in cells]
    _bars(ax, cells, wer)
    ax.errorbar(wer, range(len(cells)), xerr=_ci_err(wer, cis), fmt="none", ecolor="black", elinewidth=1,
                capsize=3)
    extra = []
    lm = [100 * c["metrics"]["wer_lm"] if c["metrics"].get("wer_lm") is not None else math.nan for c in cells]
    if report.get("lm") and any(not math.isnan(v) for v in lm):
        extra = [ax.scatter(lm, range(len(cells)), marker="D", s=22, color="black", zorder=3,
                            label="with the word LM")]
    ends = [max(w, ci[1] if ci else w) for w, ci in zip(wer, cis)]
    top = max([*ends, *[v for v in lm if not math.isnan(v)], 1.0])
    ax.set_xlim(0, top * 1.15)
    _value_labels(ax, wer, ends, ".1f", top)
    ax.set_xlabel("WER % (greedy CTC; whiskers: 95 % bootstrap interval over utterances)", fontsize=8)
    _legend(fig, cells, extra)
    return _svg(plt, fig, "Absolute WER per model × backend × precision × mode (lower is better)")


def parity_wer_delta(plt, report: dict) -> str | None:
    compared = [c for c in _measured(report) if c["role"] != "reference" and c["metrics"].get("wer_delta")
                is not None]
    ours = [c for c in compared if c["role"] != "peer"]
    peer = [c for c in compared if c["role"] == "peer"]
    if not compared:
        return None
    fig, panels = _panels(plt, [ours, peer], ["exported models vs their torch fp32 reference",
                                              "pocketsphinx peer (its own model) vs the first reference"])
    limit = report["thresholds"].get("max_wer_delta")
    extra = []
    for ax, cells in panels:
        d = [100 * c["metrics"]["wer_delta"] for c in cells]
        cis = [[100 * x for x in c["metrics"]["wer_delta_ci95"]] if c["metrics"].get("wer_delta_ci95") else None
               for c in cells]
        _bars(ax, cells, d, failed={c["id"] for c in cells if "wer_delta" in c.get("failed_metrics", [])})
        ax.errorbar(d, range(len(cells)), xerr=_ci_err(d, cis), fmt="none", ecolor="black", elinewidth=1,
                    capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ends = [(max(v, ci[1]) if v >= 0 else min(v, ci[0])) if ci else v for v, ci in zip(d, cis)]
        lo, hi = min([0.0, *ends]), max([0.0, *ends])
        if limit is not None and cells is ours:
            extra = [ax.axvline(100 * limit, color="#c0392b", linestyle="--", linewidth=1,
                                label=f"threshold +{100 * limit:g} (red outline: failed)")]
            hi = max(hi, 100 * limit)
        span = max(hi - lo, 1.0)  # all zero (fp32 everywhere): still a readable axis of a point
        ax.set_xlim(lo - (0.18 if lo < 0 else 0.03) * span, hi + 0.18 * span)  # room for the value labels
        _value_labels(ax, d, ends, "+.2f", span)
        ax.set_xlabel("ΔWER, WER points (right = worse; whiskers: paired 95 % bootstrap interval)", fontsize=8)
    _legend(fig, compared, extra)
    return _svg(plt, fig, "ΔWER against the reference, with values (the peer on its own scale)")


def _box_panels(plt, groups, titles, values, whis, xlabel: str, caption: str) -> str | None:
    """Horizontal box plots per cell; each panel's x axis runs from 0 to its data's max plus a margin."""
    if not any(groups):
        return None
    fig, panels = _panels(plt, groups, titles)
    for ax, cells in panels:
        data = [[v for v in values(c) if v is not None] for c in cells]  # None: a non-finite value in the JSON
        bp = ax.boxplot(data, positions=range(len(cells)), orientation="horizontal", widths=0.55, whis=whis,
                        patch_artist=True, flierprops={"markersize": 2, "alpha": 0.5},
                        medianprops={"color": "black"})
        for patch, c in zip(bp["boxes"], cells):
            patch.set(**_look(c))
        ax.set_ylim(len(cells) - 0.5, -0.5)
        ax.set_yticks(range(len(cells)), [cell_label(c) for c in cells], fontsize=7.5)
        ax.set_xlim(0, max(max(v) for v in data) * 1.06)
        ax.set_xlabel(xlabel, fontsize=8)
    _legend(fig, [c for g in groups for c in g])
    return _svg(plt, fig, caption)


def parity_rtf(plt, report: dict) -> str | None:
    cells = [c for c in _measured(report) if c.get("rtf")]
    ours, peer = [c for c in cells if c["role"] != "peer"], [c for c in cells if c["role"] == "peer"]
    return _box_panels(plt, [ours, peer], ["", "pocketsphinx peer (its own scale)"], lambda c: c["rtf"], (0, 100),
                       "RTF per utterance (processing s / audio s; < 1 is faster than real time)",
                       "RTF distribution per cell, one value per utterance (box: quartiles and median; whiskers: "
                       "min to max)")


def parity_latency(plt, report: dict) -> str | None:
    cells = [c for c in _measured(report) if c.get("latencies_ms")]
    return _box_panels(plt, [cells], [""], lambda c: c["latencies_ms"], (1, 99),
                       "ms per accept_waveform call that ran the model (one chunk of audio)",
                       "Chunk latency distribution, step mode (box: quartiles and median; whiskers: 1st-99th "
                       "percentile; dots: beyond)")


def parity_figures(report: dict) -> list[str] | None:
    """The parity page's figures (inline SVG), or None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    figs = [parity_wer(plt, report), parity_wer_delta(plt, report), parity_rtf(plt, report),
            parity_latency(plt, report)]
    return [f for f in figs if f]
