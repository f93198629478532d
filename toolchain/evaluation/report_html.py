"""Rendering of a parity report (``edgeasr.evaluation.parity``): a terminal/markdown table, ``report.md`` and a self-contained
``report.html`` (inline CSS and SVG plots drawn here — no matplotlib, no scripts or fonts from the network).

The HTML carries a tiny inline script that records ``window.onerror`` and ``console.error`` into
``<pre id="page-errors">`` and the number of rendered plots into ``<body data-plots=...>``, so a headless browser
(``chromium --dump-dom``) can check the page without DevTools.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path

COLORS = {"torch": "#555555", "ort": "#1f77b4", "openvino": "#8e44ad", "tensorrt": "#2ca02c", "ort-cuda": "#17becf",
          "pocketsphinx": "#d35400"}
PREC_DASH = {"fp32": "", "bf16": "6 3", "int8": "2 2", "fp16": "8 2 2 2"}

COLUMNS = [  # (key, header, format)
    ("wer", "WER %", lambda v: f"{100 * v:.1f}"),
    ("wer_ci95", "WER 95% CI", lambda v: f"{100 * v[0]:.1f}–{100 * v[1]:.1f}"),
    ("cer", "CER %", lambda v: f"{100 * v:.1f}"),
    ("wer_delta", "ΔWER", lambda v: f"{100 * v:+.2f}"),
    ("wer_delta_ci95", "ΔWER 95% CI", lambda v: f"{100 * v[0]:+.2f}–{100 * v[1]:+.2f}"),
    ("significant", "sig", lambda v: "yes" if v else "no"),
    ("wer_lm", "WER LM %", lambda v: f"{100 * v:.1f}"),
    ("wer_lm_delta", "ΔWER LM", lambda v: f"{100 * v:+.2f}"),
    ("agreement_pct", "agree %", lambda v: f"{v:.0f}"),
    ("err_max_abs", "max err", lambda v: f"{v:.2g}"),
    ("err_p99", "p99 err", lambda v: f"{v:.2g}"),
    ("cosine_min", "cos", lambda v: f"{v:.5f}"),
    ("state_err_max_abs", "state err", lambda v: f"{v:.2g}"),
    ("state_err_rel", "state rel", lambda v: f"{v:.2g}"),
    ("rtf_median", "RTF med", lambda v: f"{v:.3f}"),
    ("rtf_p90", "RTF p90", lambda v: f"{v:.3f}"),
    ("latency_ms_p50", "lat p50 ms", lambda v: f"{v:.1f}"),
    ("latency_ms_p95", "p95", lambda v: f"{v:.1f}"),
    ("latency_ms_p99", "p99", lambda v: f"{v:.1f}"),
    ("first_partial_ms_median", "1st partial ms", lambda v: f"{v:.0f}"),
    ("peak_rss_mb", "peak RSS MB", lambda v: f"{v:.0f}"),
    ("load_s", "load s", lambda v: f"{v:.2f}"),
]


LM_KEYS = ("wer_lm", "wer_lm_delta")


def _quant_format(model: dict) -> str:
    """`` (QDQ)`` / `` (dynamic)`` for an int8 model: parity compares the formats side by side."""
    r = model.get("quant_recipe")
    if isinstance(r, str):
        try:
            r = json.loads(r)
        except ValueError:
            r = None
    return f" ({r['format']})" if isinstance(r, dict) and r.get("format") else ""


def columns(report: dict) -> list:
    """The table's metric columns: the word-LM ones only when the report decoded with an LM."""
    return [c for c in COLUMNS if report.get("lm") or c[0] not in LM_KEYS]


def _fmt(m: dict, key: str, f) -> str:
    v = m.get(key)
    return "–" if v is None else f(v)


def cell_label(c: dict) -> str:
    return f"{c['backend']}/{c['precision']}/{c['mode']}"


def rows(report: dict, reason_width: int | None = None) -> list[list[str]]:
    """Header + one row per cell (measured, errored and skipped alike)."""
    cols = columns(report)
    head = ["model", "backend", "prec", "mode", "status", *[h for _, h, _ in cols], "size MB"]
    out = [head]
    order = {"reference": 0, "ok": 1, "error": 2, "skipped": 3}
    cells = sorted(report["cells"], key=lambda c: (c["role"] == "peer", order.get(c["status"], 9)))
    for c in cells:
        m = c.get("metrics", {})
        status = c["status"]
        if c.get("threshold_failures"):
            status = "FAIL"
        if c["status"] in ("skipped", "error"):
            vals = [c.get("reason", "")[:reason_width]] + [""] * (len(cols) - 1)
        else:
            vals = [_fmt(m, k, f) for k, _, f in cols]
        size = c.get("file_mb")
        mode = c["mode"] + (" chunk-bi" if c.get("direction") == "chunk-bi" else "")  # its own reference row
        out.append([c["model"], c["backend"], c["precision"], mode, status, *vals,
                    "–" if size is None else f"{size:.2f}"])
    return out


def summary_table(report: dict) -> str:
    """Plain-text table for the terminal (skipped/error rows show their reason after the status)."""
    rs = rows(report, reason_width=110)
    short = {"skipped", "error"}
    widths = [max([len(r[i]) for r in rs if r[4] not in short] or [0]) for i in range(len(rs[0]))]
    for i in range(5):
        widths[i] = max(len(r[i]) for r in rs)
    lines = []
    for r in rs:
        if r[4] in short:
            lines.append("  ".join(r[i].ljust(widths[i]) for i in range(5)) + "  " + r[5])
        else:
            lines.append("  ".join(v.rjust(widths[i]) if i >= 5 else v.ljust(widths[i]) for i, v in enumerate(r)))
    return "\n".join(lines)


def verdict(report: dict) -> str:
    """FAIL when a cell crossed a threshold; PASS only when there was a threshold to pass; else say nothing was
    checked (a report without thresholds measures, it does not judge)."""
    if not report["passed"]:
        return "FAIL"
    t = report["thresholds"]
    if t.get("max_wer_delta") is None and t.get("max_err") is None:
        return "no thresholds set"
    return "PASS"


def render_markdown(report: dict) -> str:
    t = report["test"]
    ref = report["reference"]
    lines = ["# edgeasr parity report", "",
             f"- schema `{report['schema']}`, created {report['created']}, edgeasr {report['edgeasr_version']}",
             f"- test set `{t['manifest']}`: {t['utterances']} utterances, {t['audio_seconds']:.1f} s of audio",
             f"- reference: torch fp32 `{ref.get('model')}` ({ref.get('how')}; weights sha256 "
             f"`{(ref.get('sha256') or '')[:12]}`)",
             f"- host: {report['host']['cpu']} ({report['host']['cpu_count']} CPUs), {report['threads']} thread(s)",
             f"- thresholds: max ΔWER {report['thresholds']['max_wer_delta']}, max abs error "
             f"{report['thresholds']['max_err']}",
             *([f"- word LM `{report['lm']['path']}` ({report['lm']['order']}-gram, {report['lm']['words']} words; "
                f"lm_weight {report['lm']['weights']['lm_weight']:g}, word_score "
                f"{report['lm']['weights']['word_score']:g}): WER LM columns"] if report.get("lm") else []),
             f"- result: **{verdict(report)}**", ""]
    if report["failures"]:
        lines += ["## Failures", ""] + [f"- `{f}`" for f in report["failures"]] + [""]
    if report.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    rs = rows(report)
    lines += ["## Cells", "", "| " + " | ".join(rs[0]) + " |", "|" + "---|" * len(rs[0])]
    for r in rs[1:]:
        lines.append("| " + " | ".join(v.replace("|", "\\|") for v in r) + " |")
    notes = [(c["id"], n) for c in report["cells"] for n in c.get("notices", [])]
    if notes:
        lines += ["", "## Notices", ""] + [f"- `{i}`: {n}" for i, n in notes]
    modes = [(c["id"], c["backend_mode"]) for c in report["cells"] if c.get("backend_mode")]
    if modes:
        lines += ["", "## Backend modes", ""] + [f"- `{i}`: {m}" for i, m in modes]
    lines += ["", "## How it was measured", ""] + [f"- **{k}**: {v}" for k, v in report["measurement"].items()]
    lines += ["", "Models:", ""] + [f"- `{m['name']}`: {m['graph_kind']}, {m['precision']}{_quant_format(m)}, "
                                     f"{m['direction']}, "
                                     f"chunk {m['chunk_frames']} frames, {m['size_mb']:.2f} MB"
                                     for m in report["models"]]
    return "\n".join(lines) + "\n"


# --- SVG plots ---------------------------------------------------------------------------------------------------
def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def _svg(w: int, h: int, title: str, body: list[str]) -> str:
    return (f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            f'role="img" aria-label="{_esc(title)}"><title>{_esc(title)}</title>'
            f'<rect width="{w}" height="{h}" fill="#fff"/>' + "".join(body) + "</svg>")


def _nice_max(v: float) -> float:
    if v <= 0 or not math.isfinite(v):
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * e:
            return m * e
    return 10 * e


def _measured(report: dict) -> list[dict]:
    return [c for c in report["cells"] if c["status"] in ("ok", "reference")]


def plot_rtf(report: dict) -> str:
    cells = _measured(report)
    if not cells:
        return _svg(600, 60, "RTF per backend", ['<text x="10" y="35" font-size="13">no measured cells</text>'])
    left, w, bh = 330, 380, 20
    h = 50 + bh * len(cells) + 30
    vmax = _nice_max(max((c["metrics"].get("rtf_p90") or c["metrics"].get("rtf_median") or 0) for c in cells))
    body = ['<text x="10" y="20" font-size="14" font-weight="bold">RTF per cell (bar: median, tick: p90; lower is '
            'faster)</text>']
    for i in range(5):
        x = left + w * i / 4
        body.append(f'<line x1="{x:.1f}" y1="35" x2="{x:.1f}" y2="{h - 25}" stroke="#ddd"/>'
                    f'<text x="{x:.1f}" y="{h - 10}" font-size="11" text-anchor="middle">{vmax * i / 4:.3g}</text>')
    for j, c in enumerate(cells):
        y = 40 + j * bh
        m = c["metrics"]
        med, p90 = m.get("rtf_median") or 0, m.get("rtf_p90") or 0
        col = COLORS.get(c["backend"], "#999")
        body.append(f'<text x="{left - 6}" y="{y + 14}" font-size="11" text-anchor="end">'
                    f'{_esc(cell_label(c))} · {_esc(c["model"][:28])}</text>')
        body.append(f'<rect x="{left}" y="{y + 3}" width="{w * med / vmax:.1f}" height="{bh - 6}" fill="{col}" '
                    f'opacity="{0.55 if c["precision"] != "fp32" else 0.9}"><title>{_esc(c["id"])}: median '
                    f'{med:.4f}, p90 {p90:.4f}</title></rect>')
        xp = left + w * p90 / vmax
        body.append(f'<line x1="{xp:.1f}" y1="{y + 1}" x2="{xp:.1f}" y2="{y + bh - 1}" stroke="#000" '
                    f'stroke-width="2"/>')
    return _svg(left + w + 30, h, "RTF per backend", body)


def plot_latency_cdf(report: dict) -> str:
    cells = [c for c in _measured(report) if c.get("latencies_ms")]
    W, H, L, B, T, R = 720, 340, 60, 40, 35, 200
    if not cells:
        return _svg(W, 60, "Chunk latency CDF", ['<text x="10" y="35" font-size="13">no step-mode cells</text>'])
    xmax = _nice_max(max(max(c["latencies_ms"]) for c in cells))
    pw, ph = W - L - R, H - T - B
    body = ['<text x="10" y="20" font-size="14" font-weight="bold">Chunk latency CDF (step mode, ms per '
            'accept_waveform call)</text>']
    for i in range(5):
        x = L + pw * i / 4
        y = T + ph * i / 4
        body.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{T + ph}" stroke="#eee"/>'
                    f'<text x="{x:.1f}" y="{H - 20}" font-size="11" text-anchor="middle">{xmax * i / 4:.3g}</text>'
                    f'<line x1="{L}" y1="{y:.1f}" x2="{L + pw}" y2="{y:.1f}" stroke="#eee"/>'
                    f'<text x="{L - 5}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{1 - i / 4:.2f}</text>')
    body.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>'
                f'<text x="{L + pw / 2}" y="{H - 4}" font-size="11" text-anchor="middle">latency (ms)</text>')
    for j, c in enumerate(cells):
        xs = sorted(c["latencies_ms"])
        n = len(xs)
        pts = " ".join(f"{L + pw * min(v, xmax) / xmax:.1f},{T + ph * (1 - (k + 1) / n):.1f}" for k, v in enumerate(xs))
        col = COLORS.get(c["backend"], "#999")
        dash = PREC_DASH.get(c["precision"], "")
        body.append(f'<polyline points="{pts}" fill="none" stroke="{col}" stroke-width="2" '
                    f'stroke-dasharray="{dash}"><title>{_esc(c["id"])}</title></polyline>')
        ly = T + 12 + 16 * j
        body.append(f'<line x1="{L + pw + 10}" y1="{ly}" x2="{L + pw + 35}" y2="{ly}" stroke="{col}" stroke-width="2" '
                    f'stroke-dasharray="{dash}"/><text x="{L + pw + 40}" y="{ly + 4}" font-size="11">'
                    f'{_esc(cell_label(c))}</text>')
    return _svg(W, max(H, T + 16 * len(cells) + 20), "Chunk latency CDF", body)


def plot_wer_delta(report: dict) -> str:
    cells = [c for c in _measured(report) if c["role"] != "reference" and c["metrics"].get("wer_delta") is not None]
    if not cells:
        return _svg(600, 60, "ΔWER vs reference", ['<text x="10" y="35" font-size="13">no compared cells</text>'])
    left, w, bh = 330, 380, 20
    h = 50 + bh * len(cells) + 30
    vmax = _nice_max(max(max(abs(100 * v) for v in (c["metrics"]["wer_delta"], *(c["metrics"].get("wer_delta_ci95")
                                                                              or ()))) for c in cells) or 1.0)
    mid = left + w / 2
    body = ['<text x="10" y="20" font-size="14" font-weight="bold">ΔWER vs the torch fp32 reference (WER points; '
            'right = worse; whisker: paired 95 % CI)</text>',
            f'<line x1="{mid}" y1="35" x2="{mid}" y2="{h - 25}" stroke="#000"/>']
    for v in (-vmax, -vmax / 2, vmax / 2, vmax):
        x = mid + w / 2 * v / vmax
        body.append(f'<line x1="{x:.1f}" y1="35" x2="{x:.1f}" y2="{h - 25}" stroke="#eee"/>'
                    f'<text x="{x:.1f}" y="{h - 10}" font-size="11" text-anchor="middle">{v:+.3g}</text>')
    body.append(f'<text x="{mid}" y="{h - 10}" font-size="11" text-anchor="middle">0</text>')
    for j, c in enumerate(cells):
        y = 40 + j * bh
        d = 100 * c["metrics"]["wer_delta"]
        x0 = mid + min(0.0, w / 2 * d / vmax)
        col = "#c0392b" if d > 0 else "#27ae60"
        if c.get("threshold_failures"):
            col = "#e74c3c"
        body.append(f'<text x="{left - 6}" y="{y + 14}" font-size="11" text-anchor="end">'
                    f'{_esc(cell_label(c))} · {_esc(c["model"][:28])}</text>'
                    f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(1.0, abs(w / 2 * d / vmax)):.1f}" height="{bh - 6}" '
                    f'fill="{col}"><title>{_esc(c["id"])}: ΔWER {d:+.2f} points</title></rect>')
        ci = c["metrics"].get("wer_delta_ci95")
        if ci:  # the paired-bootstrap interval as a whisker; one that holds 0 is not significant
            xa, xb = (mid + w / 2 * 100 * v / vmax for v in ci)
            body.append(f'<line x1="{xa:.1f}" y1="{y + bh / 2:.1f}" x2="{xb:.1f}" y2="{y + bh / 2:.1f}" stroke="#000" '
                        f'stroke-width="1.5"><title>95 % CI {100 * ci[0]:+.2f} to {100 * ci[1]:+.2f}'
                        f'{"" if c["metrics"].get("significant") else " (not significant)"}</title></line>')
    return _svg(left + w + 30, h, "ΔWER vs reference", body)


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1600px}
table{border-collapse:collapse;font-size:12px}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td.l{text-align:left}tr.skipped td,tr.error td{color:#888}tr.FAIL td{background:#fdecea}
tr.reference td{background:#f5f5f5}.pass{color:#1e8449;font-weight:bold}.fail{color:#c0392b;font-weight:bold}.none{color:#777;font-weight:normal;font-size:60%}
.plots{display:flex;flex-wrap:wrap;gap:16px}.plots svg{border:1px solid #ddd}code{background:#f6f6f6;padding:1px 3px}
#page-errors{color:#c0392b}"""

_GUARD = """<script>(function(){var box=function(){return document.getElementById('page-errors');};
var put=function(m){var b=box();if(b){b.textContent+=m+'\\n';}else{(window.__errs=window.__errs||[]).push(m);}};
window.addEventListener('error',function(e){put('error: '+(e.message||(e.target&&(e.target.src||e.target.href))||'resource failed'));},true);
var ce=console.error;console.error=function(){put('console.error: '+Array.prototype.join.call(arguments,' '));if(ce)ce.apply(console,arguments);};
})();</script>"""

_COUNT = """<script>(function(){var b=document.getElementById('page-errors');(window.__errs||[]).forEach(function(m){b.textContent+=m+'\\n';});
var n=0;document.querySelectorAll('svg.plot').forEach(function(s){var r=s.getBoundingClientRect();if(r.width>0&&r.height>0&&s.childElementCount>1)n++;});
document.body.setAttribute('data-plots',String(n));document.body.setAttribute('data-plots-expected',String(document.querySelectorAll('svg.plot').length));})();</script>"""


def render_html(report: dict) -> str:
    t, ref = report["test"], report["reference"]
    rs = rows(report)
    status_of = {}
    order = {"reference": 0, "ok": 1, "error": 2, "skipped": 3}
    cells = sorted(report["cells"], key=lambda c: (c["role"] == "peer", order.get(c["status"], 9)))
    trs = []
    for c, r in zip(cells, rs[1:]):
        cls = "FAIL" if c.get("threshold_failures") else c["status"]
        if c["status"] in ("skipped", "error"):
            tds = "".join(f'<td class="l">{_esc(v)}</td>' for v in r[:5])
            tds += f'<td class="l" colspan="{len(columns(report))}">{_esc(c.get("reason", ""))}</td><td>{_esc(r[-1])}</td>'
        else:
            tds = "".join(f'<td class="l">{_esc(v)}</td>' if i < 5 else f"<td>{_esc(v)}</td>" for i, v in enumerate(r))
        trs.append(f'<tr class="{cls}" title="{_esc(c["id"])}">{tds}</tr>')
        status_of[c["id"]] = cls
    head = "".join(f"<th>{_esc(h)}</th>" for h in rs[0])
    word = verdict(report)
    badge = f'<span class="{ {"PASS": "pass", "FAIL": "fail"}.get(word, "none") }">{_esc(word)}</span>'
    fails = "".join(f"<li><code>{_esc(f)}</code></li>" for f in report["failures"])
    warns = "".join(f"<li>{_esc(w)}</li>" for w in report.get("warnings", []))
    notes = "".join(f"<li><code>{_esc(c['id'])}</code>: {_esc(n)}</li>" for c in report["cells"]
                    for n in c.get("notices", []) + ([f"runs {c['backend_mode']}"] if c.get("backend_mode") else []))
    meas = "".join(f"<li><b>{_esc(k)}</b>: {_esc(v)}</li>" for k, v in report["measurement"].items())
    models = "".join(f"<li><code>{_esc(m['name'])}</code>: {_esc(m['graph_kind'])}, "
                     f"{_esc(m['precision'] + _quant_format(m))}, "
                     f"{_esc(m['direction'])}, chunk {m['chunk_frames']} frames, {m['size_mb']:.2f} MB</li>"
                     for m in report["models"])
    data = json.dumps({k: report[k] for k in ("schema", "passed", "failures")}).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgeasr parity report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">{_GUARD}<style>{_CSS}</style></head>
<body data-plots="0">
<h1>edgeasr parity report {badge}</h1>
<p>Test set <code>{_esc(t['manifest'])}</code>: {t['utterances']} utterances, {t['audio_seconds']:.1f} s of audio.
Reference: torch fp32 <code>{_esc(ref.get('model'))}</code> ({_esc(ref.get('how'))}). Host: {_esc(report['host']['cpu'])},
{report['threads']} thread(s). Schema <code>{_esc(report['schema'])}</code>, created {_esc(report['created'])}.
Thresholds: max ΔWER {_esc(report['thresholds']['max_wer_delta'])}, max abs error {_esc(report['thresholds']['max_err'])}.</p>
{f'<h2>Failures</h2><ul>{fails}</ul>' if fails else ''}{f'<h2>Warnings</h2><ul>{warns}</ul>' if warns else ''}
<h2>Plots</h2>
<div class="plots">{plot_rtf(report)}{plot_latency_cdf(report)}{plot_wer_delta(report)}</div>
<h2>Cells</h2>
<table><thead><tr>{head}</tr></thead><tbody>{''.join(trs)}</tbody></table>
{f'<h2>Notices</h2><ul>{notes}</ul>' if notes else ''}
<h2>How it was measured</h2><ul>{meas}</ul>
<h2>Models</h2><ul>{models}</ul>
<pre id="page-errors"></pre>
<script type="application/json" id="report-summary">{data}</script>
{_COUNT}
</body></html>
"""


def write_reports(report: dict, out: Path) -> dict[str, Path]:
    from edgeasr.runtimes.files import write_report_files

    return write_report_files(out, "report", {"json": json.dumps(report, indent=1, ensure_ascii=False) + "\n",
                                              "md": render_markdown(report), "html": render_html(report)})
