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


# --- bench -------------------------------------------------------------------------------------------------------
def _ok_points(cell: dict) -> list[dict]:
    return [p for p in cell["points"] if p.get("status") == "ok"]


def _fmt_b(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def bench_scaling(plt, report: dict) -> list[str]:
    """Per backend: time, RTF and peak RSS against audio length, one line per mixer × graph kind; the legend
    carries the fitted exponent b of time ~ length^b (and b between the last two lengths)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    lf = report.get("longform") or {}
    figs = []
    for backend in dict.fromkeys(c["backend"] for c in lf.get("cells", [])):
        cells = [c for c in lf["cells"] if c["backend"] == backend and _ok_points(c)]
        if not cells:
            continue
        fig, (ax_t, ax_r, ax_m) = plt.subplots(1, 3, figsize=(10.5, 3.9))
        for i, c in enumerate(cells):
            pts = _ok_points(c)
            xs = [p["seconds"] for p in pts]
            style = {"color": SERIES_COLORS[i % len(SERIES_COLORS)], "marker": "o", "markersize": 4,
                     "linestyle": "-" if c["kind"] == "full" else "--"}
            label = f"{c['mixer']} {c['kind']}: b={_fmt_b(c.get('exponent'))} (last {_fmt_b(c.get('exponent_last'))})"
            ax_t.plot(xs, [p["time_s"] for p in pts], label=label, **style)
            ax_r.plot(xs, [p["time_s"] / p["seconds"] for p in pts], **style)
            ax_m.plot(xs, [p["peak_rss_mb"] for p in pts], **style)
        # slope guides through the fastest first point: where a line runs parallel, time grows like length^1 / ^2
        x0, y0 = min(((_ok_points(c)[0]["seconds"], _ok_points(c)[0]["time_s"]) for c in cells), key=lambda p: p[1])
        x1 = max(p["seconds"] for c in cells for p in _ok_points(c))
        for slope, dots in ((1, (0, (4, 3))), (2, (0, (1, 2)))):
            ax_t.plot([x0, x1], [y0, y0 * (x1 / x0) ** slope], color="#999999", linestyle=dots, linewidth=1,
                      label=f"slope {slope} (time ~ length^{slope})")
        lengths = sorted({p["seconds"] for c in cells for p in _ok_points(c)})
        for ax, ylabel, title in ((ax_t, "seconds (log)", "encoder time vs length"),
                                  (ax_r, "RTF (time / audio)", "RTF vs length"), (ax_m, "MB", "peak RSS vs length")):
            ax.set_xscale("log")
            ax.set_xticks(lengths, [_length_label(x) for x in lengths])  # the measured lengths, not decades
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("audio length (log)", fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
            ax.set_title(title, fontsize=9, loc="left")
            ax.tick_params(labelsize=8)
            ax.grid(color="#e5e5e5")
        ax_t.set_yscale("log")
        times = [p["time_s"] for c in cells for p in _ok_points(c)]
        ax_t.set_ylim(min(times) / 1.5, max(times) * 1.5)  # the guides may run past the data: the data decides
        ax_t.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax_t.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
        ax_r.set_ylim(bottom=0)
        ax_m.set_ylim(bottom=0)
        handles = ax_t.get_legend_handles_labels()
        fig.legend(*handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.22 * math.ceil(len(handles[0]) / 3) / fig.get_figheight(), 1, 1))
        figs.append(_svg(plt, fig, f"{backend}: encoder time, RTF and peak RSS vs audio length (solid: full graph, "
                                   "dashed: step graph; b = fitted exponent of time ~ length^b)"))
    return figs


def _length_label(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def bench_sweep(plt, report: dict) -> str | None:
    """WER (with its 95 % interval) and encoder RTF against chunk size, one panel column per mode."""
    fig = sweep_figure(plt, (report.get("sweep") or {}).get("rows", []))
    if fig is None:
        return None
    return _svg(plt, fig, "Chunk-size sweep: WER with its 95 % bootstrap interval, and encoder RTF, vs chunk size")


def sweep_png(rows: list[dict]) -> bytes | None:
    """The chunk-size sweep figure as PNG (for Markdown pages), or None without matplotlib or measured rows."""
    plt = _pyplot()
    fig = sweep_figure(plt, rows) if plt is not None else None
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def sweep_figure(plt, rows: list[dict]):
    """The sweep's matplotlib figure from its rows (``bench.sweep``), or None when no row was measured."""
    rows = [r for r in rows if r.get("status") == "ok"]
    if not rows:
        return None
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    fig, axes = plt.subplots(2, len(modes), squeeze=False, sharex=True,
                             figsize=(6.0 if len(modes) == 1 else 10.5, 5.6))
    series = list(dict.fromkeys((r["model"], r["backend"]) for r in rows))
    multi_backend = len({b for _, b in series}) > 1
    for j, mode in enumerate(modes):
        ax_w, ax_r = axes[0][j], axes[1][j]
        for i, (model, backend) in enumerate(series):
            pts = sorted((r for r in rows if (r["mode"], r["model"], r["backend"]) == (mode, model, backend)),
                         key=lambda r: r["chunk_ms"])
            if not pts:
                continue
            xs = [r["chunk_ms"] for r in pts]
            wer = [r["wer"] for r in pts]
            cis = [r.get("ci95") for r in pts]
            color = SERIES_COLORS[i % len(SERIES_COLORS)]
            label = f"{model} ({backend})" if multi_backend else model
            ax_w.errorbar([x * (1 + 0.03 * (i - (len(series) - 1) / 2)) for x in xs], wer,  # side by side
                          yerr=_ci_err(wer, cis), color=color, marker="o", markersize=4, capsize=3, label=label)
            ax_r.plot(xs, [r["rtf_median"] for r in pts], color=color, marker="o", markersize=4)
        ax_w.set_title(f"{mode} mode", fontsize=9, loc="left")
        ax_w.set_ylim(bottom=0)
        ax_r.set_ylim(bottom=0)
        ax_r.set_xscale("log")
        chunks = sorted({r["chunk_ms"] for r in rows})
        ax_r.set_xticks(chunks, [str(c) for c in chunks])
        ax_r.minorticks_off()
        ax_r.set_xlabel("chunk (ms)", fontsize=8)
        for ax in (ax_w, ax_r):
            ax.tick_params(labelsize=8)
            ax.grid(color="#e5e5e5")
    axes[0][0].set_ylabel("WER % (95 % CI)", fontsize=8)
    axes[1][0].set_ylabel("encoder RTF (median)", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for row in axes[0][1:]:  # a model may be missing from the first mode
        for h, lab in zip(*row.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.06))
    fig.tight_layout()
    return fig


def bench_figures(report: dict) -> list[str] | None:
    """The bench page's figures (inline SVG), or None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    return [*bench_scaling(plt, report), *[f for f in [bench_sweep(plt, report)] if f]]
