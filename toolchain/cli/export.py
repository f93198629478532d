"""CLI commands: export (torch checkpoint -> verified ONNX) and inspect (what an exported file promises)."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeasr.runtimes.errors import UserError

console = Console(stderr=True)


@click.command()
@click.argument("model")
@click.option("--kind", type=click.Choice(["full", "step", "chunk"]), required=True,
              help="full: whole utterance; step: stateful streaming (L2R); chunk: strict chunks, no state.")
@click.option("--direction", type=click.Choice(["l2r", "bi", "alt", "chunk-bi"]), default="l2r", show_default=True,
              help="chunk-bi (step or full): L2R across the stream + R2L within each --chunk-frames chunk.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Output .onnx file.")
@click.option("--chunk-frames", type=int, default=32, show_default=True,
              help="Recommended fbank frames per chunk (metadata; multiple of 4; 32 = 320 ms).")
@click.option("--lookahead-frames", type=int, default=0, show_default=True,
              help="chunk-bi step graph: fbank frames of the next chunk each call also reads (multiple of 4; "
                   "latency = chunk + look-ahead).")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset of the written graph.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check the graph on ONNX Runtime against torch before writing it.")
@click.option("--tolerance", type=float, default=1e-4, show_default=True, help="Largest absolute log-prob difference from torch that the check accepts.")
@click.option("--wav", type=click.Path(path_type=Path), help="Real audio for verification (default: a LibriVox clip).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export(model, kind, direction, out, chunk_frames, lookahead_frames, opset, verify, tolerance, wav, as_json):
    """Export a checkpoint (RUN_DIR or shipped name) to ONNX with the edgeasr metadata contract."""
    from edgeasr.extras import require

    require("torch", "onnx", "onnx_graphsurgeon")
    from edgeasr.exporters.graph_clean import GraphError
    from edgeasr.exporters.onnx_export import OPSET, ExportError, export as run_export
    from edgeasr.runtimes.files import sha256_file
    from edgeasr.models.checkpoint import WEIGHTS
    from edgeasr import pretrained
    from edgeasr.pretrained import load_model
    from edgeasr.runtimes.files import claim_output

    if opset != OPSET:  # before loading anything: cheap refusals first
        raise UserError(f"unsupported opset {opset}: edgeasr exports opset {OPSET} only")
    if out.is_dir():
        raise UserError(f"{out}: is a directory, not an output file")
    if wav is not None and not wav.is_file():
        raise UserError(f"{wav}: audio file not found")
    run_dir = pretrained.resolve_model_dir(model)
    if run_dir is not None:  # the checkpoint's own files (weights, config, training state) are never an --out
        claim_output(out, [*(f for f in run_dir.iterdir() if f.is_file() and f.suffix != ".onnx"), wav])
    net, config = load_model(model)
    try:
        result = run_export(net, config, out, kind, direction, chunk_frames, opset, verify, tolerance,
                            sha256_file(run_dir / WEIGHTS), wav, lookahead_frames)
    except (ExportError, GraphError) as e:
        raise UserError(str(e)) from None
    for note in result.warnings:
        console.print(f"[yellow]warning[/]: {note}")
    summary = {"out": str(result.path), "kind": kind, "direction": direction,
               "lookahead_frames": lookahead_frames, "size_bytes": result.size_bytes,
               "ops": result.op_count, "seconds": round(result.seconds, 2),
               "verified": result.verify is not None,
               "max_abs_error": None if result.verify is None else result.verify.max_error,
               "warnings": result.warnings}
    if as_json:
        click.echo(json.dumps(summary))
        return
    err = "not verified" if result.verify is None else f"max abs error {result.verify.max_error:.2e} (ORT vs torch)"
    la = f" +{lookahead_frames} look-ahead frames" if lookahead_frames else ""
    click.echo(f"wrote {result.path} ({kind}, {direction}{la}, {result.size_bytes / 1e6:.2f} MB, {result.op_count} ops, "
               f"{err}, {result.seconds:.1f} s)")


@click.command()
@click.argument("onnx_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def inspect(onnx_file, as_json):
    """Show what an exported model promises: graph kind, I/O, states, features, vocabulary, ops."""
    from edgeasr.model_info import describe

    info = describe(onnx_file)
    for w in info["warnings"]:
        console.print(f"[yellow]warning[/]: {escape(w)}", highlight=False, soft_wrap=True)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    meta = info["metadata"]
    out = Console(width=max(100, Console().width))
    head = Table(title=f"{onnx_file}", show_header=False)
    for k in ("graph_kind", "mixer", "direction", "dirdrop", "precision", "quant_recipe", "subsampling",
              "chunk_multiple", "chunk_frames", "lookahead_frames", "blank_id", "format_version", "source_sha256"):
        if k in meta:
            head.add_row(k, escape(str(meta[k])))
    head.add_row("opset", ", ".join(f"{d} {v}" for d, v in info["opset"].items()) or str(meta.get("opset", "?")))
    head.add_row("file size", f"{info['size_bytes'] / 1e6:.2f} MB ({info['size_bytes']} bytes)")
    head.add_row("ops", str(info["op_count"] if info["op_count"] is not None else "?"))
    out.print(head)
    io = Table("direction", "name", "dtype", "shape", title="inputs and outputs")
    for d in ("inputs", "outputs"):
        for v in info[d]:
            io.add_row(d[:-1], escape(v["name"]), v["dtype"], escape("[" + ", ".join(map(str, v["shape"])) + "]"))
    out.print(io)
    if meta["states"]:
        st = Table("state (in.<name> -> out.<name>)", "shape (no batch)", "dtype", "init", title="states")
        for s in meta["states"]:
            st.add_row(escape(s["name"]), escape(str(s["shape"])), s["dtype"], str(s["init"]))
        out.print(st)
    feats = Table("fbank option", "value", title=f"features ({meta['sample_rate']} Hz)")
    for k, v in meta["fbank"].items():
        feats.add_row(k, escape(str(v)))
    out.print(feats)
    out.print(escape(f"vocabulary ({len(meta['vocab'])}, blank {meta['blank_id']}): "
                     + " ".join(repr(t) for t in meta["vocab"])), highlight=False)
    if info["op_histogram"] is None:
        out.print("op histogram: needs the onnx package (pip install 'edgeasr[export]')")
        return
    ops = Table("op", "count", title="op histogram")
    for k, v in info["op_histogram"].items():
        ops.add_row(k, str(v))
    out.print(ops)


COMMANDS = [export, inspect]
