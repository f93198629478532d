"""Rendering of a parity report (``edgeasr.evaluation.parity``): a terminal table, ``report.md`` and a
self-contained ``report.html`` (inline CSS and SVG figures from ``edgeasr.evaluation.plots``; no scripts or fonts
from the network).

The page opens with the verdict and names every cell that crossed a threshold (red) or looks suspicious (amber,
``flags``); its tables are split by theme (accuracy; numerical error; speed, memory and size) so each fits a
1024 px screen, and every column has a tooltip on its header and a one-line legend under its table.

The HTML carries a tiny inline script that records ``window.onerror`` and ``console.error`` into
``<pre id="page-errors">``, and writes into ``<body>`` how many figures rendered (``data-plots`` against
``data-plots-expected``) and whether anything overflows sideways (``data-scroll-width``, ``data-view-width``,
``data-table-overflow``), so a headless browser (``chromium --dump-dom``) can check the page without DevTools.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

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
SIZE_COLUMN = ("file_mb", "size MB", lambda v: f"{v:.2f}")

# One line per column: the header tooltip and the legend under each table.
HELP = {
    "model": "the exported ONNX file; the torch checkpoint on reference rows; the peer's own model",
    "backend": "the runtime that ran the file (torch: the fp32 reference every other row is compared with)",
    "precision": "precision the backend computed in: fp32, bf16 (OpenVINO's CPU hint on an fp32 file), int8 (a "
            "quantized file)",
    "mode": "step: streamed chunk by chunk with the states carried; full / chunk: whole utterances; chunk-bi: "
            "streamed, both directions within each chunk",
    "status": "reference: the torch row the others are compared with; FAIL: crossed a threshold (red cell); "
              "flagged: suspicious (amber cell, reason in its tooltip); ok: measured",
    "wer": "word error rate on the test set, greedy CTC decoding (lower is better)",
    "wer_ci95": "95 % bootstrap interval of that WER over the test utterances",
    "cer": "character error rate, greedy CTC decoding",
    "wer_delta": "WER minus the reference row's, in WER points (+ is worse)",
    "wer_delta_ci95": "95 % paired-bootstrap interval of ΔWER (both rows on the same utterances)",
    "significant": "yes when the ΔWER interval excludes 0: the difference is more than the test set's noise",
    "wer_lm": "WER with the word-LM beam search instead of greedy decoding",
    "wer_lm_delta": "WER LM minus the reference row's, in WER points",
    "agreement_pct": "% of utterances whose transcript is identical to the reference row's",
    "err_max_abs": "largest absolute difference of the log-probs from the reference's, over every frame and token",
    "err_p99": "99th percentile of that log-prob difference",
    "cosine_min": "cosine similarity of the log-probs to the reference's, worst utterance (1 = identical)",
    "state_err_max_abs": "largest absolute difference of the streaming states after the last chunk (step mode)",
    "state_err_rel": "that state error divided by the largest |reference state| (states grow with the utterance)",
    "rtf_median": "real-time factor per utterance, median: processing s / audio s (< 1 is faster than real time)",
    "rtf_p90": "real-time factor, 90th percentile over utterances",
    "latency_ms_p50": "ms to process one chunk of audio (step mode), median",
    "latency_ms_p95": "ms to process one chunk, 95th percentile",
    "latency_ms_p99": "ms to process one chunk, 99th percentile",
    "first_partial_ms_median": "ms from the start of speech to the first non-empty partial transcript, with audio "
                               "arriving in real time (median)",
    "peak_rss_mb": "peak resident memory of the process that ran the row (see How it was measured)",
    "load_s": "seconds to create the session / compile the model",
    "file_mb": "model file size",
}

# The page's tables, each narrow enough for a 1024 px screen.
GROUPS = [
    ("Accuracy", ["wer", "wer_ci95", "cer", "wer_delta", "wer_delta_ci95", "significant", "wer_lm", "wer_lm_delta",
                  "agreement_pct"]),
    ("Numerical error against the reference", ["err_max_abs", "err_p99", "cosine_min", "state_err_max_abs",
                                               "state_err_rel"]),
    ("Speed, memory and size", ["rtf_median", "rtf_p90", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99",
                                "first_partial_ms_median", "peak_rss_mb", "load_s", "file_mb"]),
]
IDENTITY = [("model", "model"), ("backend", "backend"), ("precision", "prec"), ("mode", "mode")]


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
    return f"{c['model']} · {c['backend']} {c['precision']} {_mode(c)}"


def _mode(c: dict) -> str:
    d = c.get("direction") or ""
    return c["mode"] + (f" {d}" if d.startswith("chunk-bi") else "")  # its own reference row too


def status_word(c: dict) -> str:
    """FAIL over flagged over the run status."""
    if c.get("threshold_failures"):
        return "FAIL"
    if c.get("flags"):
        return "flagged"
    return c["status"]


def _sorted_cells(report: dict) -> list[dict]:
    order = {"reference": 0, "ok": 1, "error": 2, "skipped": 3}
    return sorted(report["cells"], key=lambda c: (c["role"] == "peer", order.get(c["status"], 9)))


def rows(report: dict, reason_width: int | None = None) -> list[list[str]]:
    """Header + one row per cell (measured, errored and skipped alike): the terminal's one wide table."""
    cols = columns(report)
    out = [["model", "backend", "prec", "mode", "status", *[h for _, h, _ in cols], "size MB"]]
    for c in _sorted_cells(report):
        m = c.get("metrics", {})
        if c["status"] in ("skipped", "error"):
            vals = [c.get("reason", "")[:reason_width]] + [""] * (len(cols) - 1)
        else:
            vals = [_fmt(m, k, f) for k, _, f in cols]
        out.append([c["model"], c["backend"], c["precision"], _mode(c), status_word(c), *vals,
                    _fmt(c, "file_mb", SIZE_COLUMN[2])])
    return out


def summary_table(report: dict) -> str:
    """Plain-text table for the terminal (skipped/error rows show their reason after the status), then one line per
    flagged cell."""
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
    flagged = [f"flagged {c['id']}: {f['reason']}" for c in _sorted_cells(report) for f in c.get("flags", [])]
    return "\n".join(lines + ([""] + flagged if flagged else []))


def verdict(report: dict) -> str:
    """FAIL when a cell crossed a threshold; PASS only when there was a threshold to pass; else say nothing was
    checked (a report without thresholds measures, it does not judge)."""
    if not report["passed"]:
        return "FAIL"
    if not _thresholds_set(report):
        return "no thresholds set"
    return "PASS"


def _thresholds_set(report: dict) -> bool:
    t = report["thresholds"]
    return t.get("max_wer_delta") is not None or t.get("max_err") is not None


def thresholds_text(report: dict) -> str:
    t = report["thresholds"]
    if not _thresholds_set(report):
        return "none set (--max-wer-delta, --max-err): nothing was checked"
    parts = []
    if t.get("max_wer_delta") is not None:
        parts.append(f"max ΔWER {100 * t['max_wer_delta']:g} points")
    if t.get("max_err") is not None:
        parts.append(f"max abs log-prob / state error {t['max_err']:g}")
    return ", ".join(parts)


def verdict_lines(report: dict) -> tuple[list[tuple[dict, str]], list[tuple[dict, str]]]:
    """(failing cell, its reasons) and (flagged cell, its reasons), in table order: what the header names."""
    cells = _sorted_cells(report)
    fails = [(c, "; ".join(c["threshold_failures"])) for c in cells if c.get("threshold_failures")]
    fails += [(c, f"did not run: {c['reason']}") for c in cells if c["status"] == "error"]
    flags = [(c, "; ".join(f["reason"] for f in c["flags"])) for c in cells if c.get("flags")]
    return fails, flags


def table_columns(report: dict, keys: list[str]) -> list[tuple]:
    """(key, header, format) of ``keys`` that this report has (the LM ones only with an LM)."""
    known = {c[0]: c for c in [*columns(report), SIZE_COLUMN]}
    return [known[k] for k in keys if k in known]


def table_cells(report: dict, title: str) -> list[dict]:
    """The measured rows of one table: the error table leaves out the reference rows (0 by definition) and rows
    without any error figure (the peer)."""
    cells = [c for c in _sorted_cells(report) if c["status"] in ("ok", "reference")]
    if title == GROUPS[1][0]:
        keys = GROUPS[1][1]
        cells = [c for c in cells if c["status"] != "reference" and any(c["metrics"].get(k) is not None
                                                                         for k in keys)]
    return cells


def _value(c: dict, key: str):
    return c.get("file_mb") if key == "file_mb" else c.get("metrics", {}).get(key)


def not_run(report: dict) -> list[dict]:
    return [c for c in _sorted_cells(report) if c["status"] in ("skipped", "error")]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(report: dict) -> str:
    t = report["test"]
    ref = report["reference"]
    fails, flags = verdict_lines(report)
    result = verdict(report) + (f", {len(fails)} cell(s) failed" if fails else "") + \
        (f", {len(flags)} cell(s) flagged as suspicious" if flags else "")
    lines = ["# edgeasr parity report", "", f"- result: **{result}**", f"- thresholds: {thresholds_text(report)}",
             f"- test set `{t['manifest']}`: {t['utterances']} utterances, {t['audio_seconds']:.1f} s of audio",
             f"- reference: torch fp32 `{ref.get('model')}` ({ref.get('how')}; weights sha256 "
             f"`{(ref.get('sha256') or '')[:12]}`)",
             f"- host: {report['host']['cpu']} ({report['host']['cpu_count']} CPUs), {report['threads']} thread(s)",
             *([f"- word LM `{report['lm']['path']}` ({report['lm']['order']}-gram, {report['lm']['words']} words; "
                f"lm_weight {report['lm']['weights']['lm_weight']:g}, word_score "
                f"{report['lm']['weights']['word_score']:g}): WER LM columns"] if report.get("lm") else []),
             f"- schema `{report['schema']}`, created {report['created']}, edgeasr {report['edgeasr_version']}", ""]
    if fails:
        lines += ["## Failures", ""] + [f"- `{c['id']}`: {w}" for c, w in fails] + [""]
    if flags:
        lines += ["## Suspicious cells (flagged, not failed)", ""] + [f"- `{c['id']}`: {w}" for c, w in flags] + [""]
    if report.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    for title, keys in GROUPS:
        cols = table_columns(report, keys)
        cells = table_cells(report, title)
        if not cells:
            continue
        main = title == GROUPS[0][0]
        ident = IDENTITY + ([("status", "status")] if main else [])
        head = [h for _, h in ident] + [h for _, h, _ in cols]
        lines += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for c in cells:
            vals = [c["model"], c["backend"], c["precision"], _mode(c)] + ([status_word(c)] if main else [])
            flagged = {f["metric"] for f in c.get("flags", [])}
            for k, _, f in cols:  # failing values in bold, flagged ones marked (the reasons are listed above)
                v = _fmt({k: _value(c, k)}, k, f)
                vals.append(f"**{v}**" if k in c.get("failed_metrics", []) else f"{v} ⚠" if k in flagged else v)
            lines.append("| " + " | ".join(_md_cell(v) for v in vals) + " |")
        lines += [""] + [f"- **{h}**: {HELP[k]}" for k, h in (ident if main else []) + [(k, h) for k, h, _ in cols]]
        lines.append("")
    if not_run(report):
        lines += ["## Did not run", "", "| model | backend | prec | mode | status | reason |", "|---" * 6 + "|"]
        lines += ["| " + " | ".join(_md_cell(v) for v in (c["model"], c["backend"], c["precision"], _mode(c),
                                                          c["status"], c.get("reason", ""))) + " |"
                  for c in not_run(report)]
        lines.append("")
    notes = [(c["id"], n) for c in report["cells"] for n in c.get("notices", [])]
    if notes:
        lines += ["## Notices", ""] + [f"- `{i}`: {n}" for i, n in notes] + [""]
    modes = [(c["id"], c["backend_mode"]) for c in report["cells"] if c.get("backend_mode")]
    if modes:
        lines += ["## Backend modes", ""] + [f"- `{i}`: {m}" for i, m in modes] + [""]
    lines += ["## How it was measured", ""] + [f"- **{k}**: {v}" for k, v in report["measurement"].items()]
    lines += ["", "Models:", ""] + [f"- `{m['name']}`: {m['graph_kind']}, {m['precision']}{_quant_format(m)}, "
                                     f"{m['direction']}, "
                                     f"chunk {m['chunk_frames']} frames, {m['size_mb']:.2f} MB"
                                     for m in report["models"]]
    return "\n".join(lines) + "\n"


# --- HTML --------------------------------------------------------------------------------------------------------
def _esc(s) -> str:
    return html.escape(str(s), quote=True)


PAGE_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{margin-bottom:6px}h2{margin:22px 0 6px}
table{border-collapse:collapse;font-size:12px}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;
vertical-align:top}th{background:#f3f3f3;font-weight:600;cursor:help}td.l,th.l{text-align:left}
.tablewrap{max-width:100%;overflow-x:auto}
tr.reference td{background:#f5f5f5}tr.skipped td,tr.error td{color:#666}
td.fail{background:#f8d3ce;color:#8e1b10;font-weight:bold}td.flag{background:#fce8b6}
td.status-FAIL{color:#c0392b;font-weight:bold}td.status-flagged{color:#8a5a00;font-weight:bold}
.legend{font-size:12px;color:#444;margin:6px 0 0;padding-left:18px;max-width:1100px}.legend li{margin:1px 0}
.badge-pass{color:#1e8449}.badge-fail{color:#c0392b}.badge-none{color:#777;font-weight:normal;font-size:60%}
.verdict{font-size:15px}.verdict ul{margin:4px 0 10px}.verdict li.fail{color:#8e1b10}.verdict li.flag{color:#6b4600}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,640px),1fr));gap:16px;align-items:start}
.plots.wide{grid-template-columns:1fr}
figure.plot{margin:0;border:1px solid #ddd;padding:6px;background:#fff}
figure.plot svg,figure.plot img{display:block;max-width:100%;height:auto;margin:0 auto}
figcaption{font-size:12px;color:#444;margin-top:4px}.noplots{color:#777;font-style:italic}
.nw{white-space:nowrap}code{background:#f6f6f6;padding:1px 3px;overflow-wrap:anywhere}#page-errors{color:#c0392b}"""

ERROR_GUARD = """<script>(function(){var box=function(){return document.getElementById('page-errors');};
var put=function(m){var b=box();if(b){b.textContent+=m+'\\n';}else{(window.__errs=window.__errs||[]).push(m);}};
window.addEventListener('error',function(e){put('error: '+(e.message||(e.target&&(e.target.src||e.target.href))||'resource failed'));},true);
var ce=console.error;console.error=function(){put('console.error: '+Array.prototype.join.call(arguments,' '));if(ce)ce.apply(console,arguments);};
})();</script>"""

# figures drawn with a size; tables (their wrappers) and the page itself no wider than the window
PAGE_CHECK = """<script>(function(){var b=document.getElementById('page-errors');(window.__errs||[]).forEach(function(m){b.textContent+=m+'\\n';});
var n=0;document.querySelectorAll('figure.plot').forEach(function(f){var g=f.querySelector('svg,img');if(!g)return;var r=g.getBoundingClientRect();if(r.width>0&&r.height>0)n++;});
var over=0;document.querySelectorAll('.tablewrap').forEach(function(w){over=Math.max(over,w.scrollWidth-w.clientWidth);});
var d=document.body;d.setAttribute('data-plots',String(n));d.setAttribute('data-table-overflow',String(over));
d.setAttribute('data-scroll-width',String(document.documentElement.scrollWidth));d.setAttribute('data-view-width',String(document.documentElement.clientWidth));})();</script>"""


def plots_html(figures: list[str] | None, wide: bool = False) -> str:
    """The figures, or the one line that says how to get them (a device install has no matplotlib)."""
    from edgeasr.evaluation.plots import MISSING

    if figures is None:
        return f'<p class="noplots">{_esc(MISSING)}</p>'
    if not figures:
        return '<p class="noplots">Nothing measured to plot.</p>'
    return f'<div class="plots{" wide" if wide else ""}">{"".join(figures)}</div>'


def _th(key: str, header: str, cls: str = "") -> str:
    return f'<th{f" class={cls!r}" if cls else ""} title="{_esc(HELP[key])}">{_esc(header)}</th>'


def _legend(pairs: list[tuple[str, str]]) -> str:
    return '<ul class="legend">' + "".join(f"<li><b>{_esc(h)}</b>: {_esc(HELP[k])}</li>" for k, h in pairs) + "</ul>"


def _html_table(report: dict, title: str, keys: list[str]) -> str:
    cols = table_columns(report, keys)
    cells = table_cells(report, title)
    if not cells:
        return ""
    main = title == GROUPS[0][0]
    ident = IDENTITY + ([("status", "status")] if main else [])
    head = "".join(_th(k, h, "l") for k, h in ident)
    head += "".join(_th(k, h) for k, h, _ in cols)
    trs = []
    for c in cells:
        word = status_word(c)
        why = {k: w for k, w in zip(c.get("failed_metrics", []), c.get("threshold_failures", []))}
        flag = {}
        for f in c.get("flags", []):
            flag[f["metric"]] = (flag[f["metric"]] + "; " if f["metric"] in flag else "") + f["reason"]
        tds = [f'<td class="l">{_esc(v)}</td>' for v in (c["model"], c["backend"], c["precision"])]
        tds.append(f'<td class="l">{_esc(_mode(c)).replace("chunk-bi", "<span class=nw>chunk-bi</span>")}</td>')
        if main:
            tip = "; ".join([*c.get("threshold_failures", []), *[f["reason"] for f in c.get("flags", [])]])
            tds.append(f'<td class="l status-{word}"{f" title={_esc(tip)!r}" if tip else ""}>{_esc(word)}</td>')
        for k, _, f in cols:
            text = _esc(_fmt({k: _value(c, k)}, k, f)).replace("–", "–<wbr>")  # an interval may wrap at its dash
            if k in why:
                tds.append(f'<td class="fail" title="{_esc(why[k])}">{text}</td>')
            elif k in flag:
                tds.append(f'<td class="flag" title="{_esc(flag[k])}">{text}</td>')
            else:
                tds.append(f"<td>{text}</td>")
        trs.append(f'<tr class="{_esc(c["status"])}" title="{_esc(c["id"])}">{"".join(tds)}</tr>')
    legend = _legend((ident if main else []) + [(k, h) for k, h, _ in cols])  # the row names once, first table
    return (f"<h2>{_esc(title)}</h2><div class=\"tablewrap\"><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(trs)}</tbody></table></div>{legend}")


def _not_run_table(report: dict) -> str:
    cells = not_run(report)
    if not cells:
        return ""
    trs = "".join(f'<tr class="{_esc(c["status"])}">' + "".join(
        f'<td class="l">{_esc(v)}</td>' for v in (c["model"], c["backend"], c["precision"], _mode(c), c["status"],
                                                   c.get("reason", ""))) + "</tr>" for c in cells)
    return ('<h2>Did not run</h2><div class="tablewrap"><table><thead><tr><th class="l">model</th>'
            '<th class="l">backend</th><th class="l">prec</th><th class="l">mode</th><th class="l">status</th>'
            f'<th class="l">reason</th></tr></thead><tbody>{trs}</tbody></table></div>')


def _verdict_html(report: dict) -> str:
    fails, flags = verdict_lines(report)
    word = verdict(report)
    parts = [f"<p>Thresholds: {_esc(thresholds_text(report))}.</p>"]
    if fails:
        parts.append(f"<p><b>{len(fails)} cell(s) failed</b> (red in the tables):</p><ul>" + "".join(
            f'<li class="fail"><code>{_esc(cell_label(c))}</code>: {_esc(w)}</li>' for c, w in fails) + "</ul>")
    elif word == "PASS":
        parts.append("<p>Every measured cell is within the thresholds.</p>")
    if flags:
        parts.append(f"<p><b>{len(flags)} cell(s) flagged as suspicious</b> (amber; flags do not fail the run):</p><ul>"
                     + "".join(f'<li class="flag"><code>{_esc(cell_label(c))}</code>: {_esc(w)}</li>'
                               for c, w in flags) + "</ul>")
    return f'<div class="verdict">{"".join(parts)}</div>'


def render_html(report: dict) -> str:
    from edgeasr.evaluation.plots import parity_figures

    figures = parity_figures(report)  # None without matplotlib
    t, ref = report["test"], report["reference"]
    word = verdict(report)
    badge = f'<span class="badge-{ {"PASS": "pass", "FAIL": "fail"}.get(word, "none") }">{_esc(word)}</span>'
    warns = "".join(f"<li>{_esc(w)}</li>" for w in report.get("warnings", []))
    notes = "".join(f"<li><code>{_esc(c['id'])}</code>: {_esc(n)}</li>" for c in report["cells"]
                    for n in c.get("notices", []) + ([f"runs {c['backend_mode']}"] if c.get("backend_mode") else []))
    meas = "".join(f"<li><b>{_esc(k)}</b>: {_esc(v)}</li>" for k, v in report["measurement"].items())
    models = "".join(f"<li><code>{_esc(m['name'])}</code>: {_esc(m['graph_kind'])}, "
                     f"{_esc(m['precision'] + _quant_format(m))}, "
                     f"{_esc(m['direction'])}, chunk {m['chunk_frames']} frames, {m['size_mb']:.2f} MB</li>"
                     for m in report["models"])
    lm = report.get("lm")
    lm_line = (f" Word LM <code>{_esc(lm['path'])}</code> ({lm['order']}-gram): WER LM columns." if lm else "")
    tables = "".join(_html_table(report, title, keys) for title, keys in GROUPS) + _not_run_table(report)
    data = json.dumps({k: report[k] for k in ("schema", "passed", "failures")}).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgeasr parity report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">{ERROR_GUARD}<style>{PAGE_CSS}</style></head>
<body data-plots="0" data-plots-expected="{len(figures or [])}">
<h1>edgeasr parity report {badge}</h1>
{_verdict_html(report)}
<p>Test set <code>{_esc(t['manifest'])}</code>: {t['utterances']} utterances, {t['audio_seconds']:.1f} s of audio.
Reference: torch fp32 <code>{_esc(ref.get('model'))}</code> ({_esc(ref.get('how'))}). Host: {_esc(report['host']['cpu'])},
{report['threads']} thread(s). Schema <code>{_esc(report['schema'])}</code>, created {_esc(report['created'])}.{lm_line}</p>
{f'<h2>Warnings</h2><ul>{warns}</ul>' if warns else ''}
<h2>Plots</h2>
{plots_html(figures)}
{tables}
{f'<h2>Notices</h2><ul>{notes}</ul>' if notes else ''}
<h2>How it was measured</h2><ul>{meas}</ul>
<h2>Models</h2><ul>{models}</ul>
<pre id="page-errors"></pre>
<script type="application/json" id="report-summary">{data}</script>
{PAGE_CHECK}
</body></html>
"""


def write_reports(report: dict, out: Path) -> dict[str, Path]:
    from edgeasr.runtimes.files import write_report_files

    return write_report_files(out, "report", {"json": json.dumps(report, indent=1, ensure_ascii=False) + "\n",
                                              "md": render_markdown(report), "html": render_html(report)})
