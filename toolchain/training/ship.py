"""Package a trained run as a shipped model: fp16 safetensors + config.json with a model card (the exact
training command, hardware, wall time, and WER per direction mode on held-out voices and real recordings).

    python -m edgeasr.training.ship RUN_DIR --name NAME --test work/corpus/test.jsonl --real work/real/real.jsonl
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import torch

from edgeasr.models.checkpoint import WEIGHTS, load_checkpoint, save_checkpoint
from edgeasr.runtimes.features import FbankOptions
from edgeasr.training.dataset import load_utterances
from edgeasr.data.manifest import read_manifest
from edgeasr.machine import cpu_name
from edgeasr import pretrained
from edgeasr.training.provenance import describe_init
from edgeasr.training.train import evaluate

SIZE_LIMIT_MB = 10.0
STREAMING_CHUNKS_MS = (160, 320, 640, 1280)
# chunk + an equal look-ahead: 320 and 640 ms of latency (pretrained.STREAMING_MODE is one of them)
STREAMING_LOOKAHEAD_MS = (160, 320)


def wer_table(model, config: dict, manifests: dict[str, Path]) -> dict:
    """{set: {mode: WER %}}: every inference mode of a bidirectional (RA) mixer; the trained mode otherwise (a
    causally trained mha/deformable run non-causally is a different model, so that number would mislead)."""
    opts = FbankOptions.from_dict(config["features"])
    modes = ("l2r", "alt", "bi") if model.bidirectional else (config["model"]["direction"],)
    if model.bidirectional and config["model"].get("chunk_bi_p"):  # trained to stream chunk-bi: its chunk sizes too
        modes = ("l2r", *(f"chunk-bi:{c}ms" for c in STREAMING_CHUNKS_MS),
                 *(f"chunk-bi:{c}ms+{c}ms" for c in STREAMING_LOOKAHEAD_MS), "alt", "bi")
    strict = sorted(config["model"].get("strict_chunk_ms") or [])
    if strict:  # trained for strict chunks: measured at each of its sizes only
        modes = tuple(f"strict:{c:g}ms" for c in strict)
    table = {}
    for name, path in manifests.items():
        utts = load_utterances(read_manifest(path), opts)
        table[name] = {}
        for mode in modes:
            model.set_direction(mode)
            table[name][mode] = round(evaluate(model, utts, "cpu")[0] * 100, 2)
    model.set_direction(config["model"]["direction"])
    return table


def ship(run_dir: Path, name: str, manifests: dict[str, Path], dest_root: Path = pretrained.HERE) -> dict:
    """Write the fp16 model to a temporary folder, measure the card's WER on exactly those weights, then rename it
    into place (a failed or interrupted ship leaves the previous shipped model untouched)."""
    model, config = load_checkpoint(run_dir)
    summary_path = Path(run_dir) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    dest = Path(dest_root) / name
    tmp = Path(dest_root) / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(tmp, model, {k: v for k, v in config.items() if k not in ("format", "model")},
                    dtype=torch.float16)
    shipped_model, shipped_config = load_checkpoint(tmp)
    card = {
        "mixer": config["model"]["mixer"],
        "dirdrop": f'{config["model"]["dirdrop"]}@{config["model"]["dirdrop_p"]}',
        "parameters": config.get("parameters"),
        "command": config.get("command", ""),
        # runs before "hardware" was recorded all trained on this machine's CPU
        "trained_on": config.get("hardware")
        or f"{cpu_name()}, CPU, {config['train'].get('threads') or 'default'} torch thread(s)",
        "train_wall_s": summary.get("total_train_s", summary.get("wall_s")),
        "steps": summary.get("steps"),
        "weights_step": config.get("metrics", {}).get("step"),  # the best dev-WER checkpoint, not always the last
        # recorded when training started (what a shipped name meant then), else described now; steps/wall above
        # are the fine-tune's own
        "fine_tuned_from": config.get("init_from") or describe_init(config["train"].get("init", "")),
        "train_hours": config.get("data", {}).get("train_hours"),
        "dev_wer": config.get("metrics", {}).get("dev_wer"),
        "wer": wer_table(shipped_model, shipped_config, manifests),
        "wer_sets": {k: str(v) for k, v in manifests.items()},
        "size_mb": round((tmp / WEIGHTS).stat().st_size / 1e6, 2),
    }
    if card["size_mb"] > SIZE_LIMIT_MB:
        shutil.rmtree(tmp)
        raise click.ClickException(f"{name}: {card['size_mb']} MB exceeds the {SIZE_LIMIT_MB} MB shipping limit")
    cfg = json.loads((tmp / "config.json").read_text())
    cfg["card"] = card
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return card


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", required=True)
@click.option("--test", "test_manifest", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--real", "real_manifest", type=click.Path(exists=True, path_type=Path))
def main(run_dir, name, test_manifest, real_manifest):
    manifests = {"test": test_manifest, **({"real": real_manifest} if real_manifest else {})}
    click.echo(json.dumps(ship(run_dir, name, manifests), indent=2))


if __name__ == "__main__":
    main()
