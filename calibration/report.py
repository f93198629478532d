"""The quantization report: what was quantized, what stayed fp32 and why, sensitivities, the final ΔWER."""
from __future__ import annotations

import json

from edgeasr.runtimes.files import atomic_write


def build_report(model: str, out: str, method: str, calib: dict, choices: list, sensitivity: dict,
                 quantized: list[str], kept_fallback: list[str], dev: dict | None, sizes: tuple[int, int]) -> dict:
    qset, fb = set(quantized), set(kept_fallback)
    nodes = []
    for c in choices:
        row = {"node": c.name, "op": c.op_type, "weight": c.weight, "shape": c.shape,
               "precision": "int8" if c.name in qset else "fp32",
               "reason": c.reason if c.name in qset or not c.quantize else
               "accuracy fallback (most sensitive)" if c.name in fb else c.reason}
        row.update(sensitivity.get(c.name, {}))
        nodes.append(row)
    return {"model": model, "out": out, "method": method, "calibration": calib,
            "size_bytes": {"fp32": sizes[0], "int8": sizes[1],
                           "ratio": round(sizes[0] / sizes[1], 3) if sizes[1] else None},
            "nodes_quantized": len(quantized), "nodes_kept_fp32": len(choices) - len(quantized),
            "dev": dev, "nodes": nodes}


def format_report(r: dict, all_nodes: bool = False) -> str:
    lines = [f"{r['out']} ({r.get('format', 'qdq')}): {r['nodes_quantized']} node(s) int8, {r['nodes_kept_fp32']} weight node(s) kept fp32 "
             f"({r['method']} calibration on {r['calibration'].get('samples')} samples from "
             f"{r['calibration'].get('utterances')} utterances); size {r['size_bytes']['fp32'] / 1e6:.2f} MB -> "
             f"{r['size_bytes']['int8'] / 1e6:.2f} MB ({r['size_bytes']['ratio']}x)"]
    if r.get("dev"):
        d = r["dev"]
        lines.append(f"dev WER fp32 {d['wer_fp32']:.4f} -> int8 {d['wer_int8']:.4f} (ΔWER {d['delta_wer']:+.4f}, "
                     f"budget {d['budget']:.4f}, {d['utterances']} utterances)")
    nodes = r["nodes"]
    if not all_nodes:  # a summary: counts per (precision, reason) and the weakest int8 nodes by SQNR
        counts: dict[tuple[str, str], int] = {}
        for n in nodes:
            counts[(n["precision"], n["reason"])] = counts.get((n["precision"], n["reason"]), 0) + 1
        lines += [f"  {c:4d} {p:5s} {reason}" for (p, reason), c in sorted(counts.items())]
        nodes = sorted((n for n in nodes if n.get("sqnr_db") is not None), key=lambda n: n["sqnr_db"])[:5]
        if not nodes:
            return "\n".join(lines)
        lines.append("lowest SQNR (all nodes: --all-nodes or --json):")
    lines.append(f"{'precision':9s} {'sqnr dB':>8s}  {'node':40s} reason")
    for n in nodes:
        s = n.get("sqnr_db")
        lines.append(f"{n['precision']:9s} {'' if s is None else f'{s:8.1f}':>8s}  {n['node'][:40]:40s} {n['reason']}")
    return "\n".join(lines)


def write_report(r: dict, path) -> None:
    atomic_write(path, json.dumps(r, indent=2).encode())
