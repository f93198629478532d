"""``edgeasr train``: options -> ``edgeasr.training.train.train``."""
from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path

import click
from rich.console import Console

from edgeasr import pretrained
from edgeasr.cli.options import renamed
from edgeasr.models.config import MIXERS
from edgeasr.runtimes.errors import UserError

console = Console(stderr=True)


def _snr_range(value: str | None):
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected LO,HI in dB (e.g. 3,30), got {value!r}") from None
    if lo > hi:
        raise click.BadParameter(f"LO must not exceed HI, got {value!r}")
    return [lo, hi]


def _ms_list(value: str | None, allow_zero: bool = False):
    if value is None:
        return None
    try:
        ms = [int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected milliseconds like 160,320,640,1280, got {value!r}") from None
    if not ms or min(ms) < (0 if allow_zero else 1):
        raise click.BadParameter(f"sizes must be {'non-negative' if allow_zero else 'positive'}, got {value!r}")
    return ms


@click.command()
@click.option("--mixer", type=click.Choice(MIXERS),
              help="What mixes information across time in each block (mha is attention; none: nothing).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help='JSON {"model": {...}, "train": {...}}; options given here override it.')
@click.option("--train", "train_manifests", required=True, multiple=True, type=click.Path(path_type=Path),
              help="Train manifest; repeat it to pool several corpora (e.g. two synth seeds, or synth + your own).")
@click.option("--dev", "dev_manifest", required=True, type=click.Path(path_type=Path),
              help="Dev manifest: its WER picks the best checkpoint.")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory of the run: the best checkpoint (model.safetensors, config.json), the last one "
                   "for --resume, summary.json.")
@click.option("--epochs", type=int, help="Passes over the training data (the first budget to end stops training).")
@click.option("--max-minutes", type=float,
              help="Training budget in minutes, summed over --resume runs; the learning-rate schedule is planned to "
                   "end with it.")
@click.option("--max-steps", type=int,
              help="Training budget in optimizer steps; the learning-rate schedule is planned to end with it "
                   "(equal steps compare mixers fairly).")
@click.option("--batch-frames", type=int, help="Batch size in feature frames (10 ms each), padding included.")
@click.option("--lr", type=float, help="Peak learning rate of the warmup + cosine schedule.")
@click.option("--d-model", type=int, help="Model width (144 in the shipped models).")
@click.option("--layers", type=int, help="Conformer blocks (6 in the shipped models).")
@click.option("--dirdrop", type=click.Choice(["none", "r2l", "both"]), help="Direction Dropout of a bidirectional mixer: drop R2L only, either direction, or none.")
@click.option("--dirdrop-p", type=float, help="Probability that a layer drops a direction in a training step.")
@click.option("--direction", type=click.Choice(["l2r", "bi"]),
              help="What the model sees: l2r (the past only, so it streams) or bi (past and future).")
@click.option("--dev-direction", help="Score dev WER (and keep the best checkpoint) in this mode, e.g. "
                                      "chunk-bi:640ms for a streaming fine-tune (default: the model's own mode).")
@click.option("--chunk-bi-p", type=float,
              help="Share of training steps run in chunk-bi mode (a bidirectional model streaming with one chunk "
                   "of look-ahead).")
@click.option("--chunk-bi-ms", callback=lambda c, p, v: _ms_list(v), metavar="MS,MS,...",
              help="Chunk sizes a chunk-bi training step draws from (default 160,320,640,1280).")
@click.option("--chunk-bi-lookahead-ms", callback=lambda c, p, v: _ms_list(v, allow_zero=True), metavar="MS,MS,...",
              help="Look-aheads a chunk-bi training step draws from, e.g. 0,160,320 (each chunk's R2L also reads "
                   "that much of the next chunk; default none).")
@click.option("--strict-chunk-ms", callback=lambda c, p, v: _ms_list(v), metavar="MS,MS,...",
              help="Train for strict-chunk streaming: each step cuts the audio into chunks of a size drawn from "
                   "this list and encodes every chunk alone (no context across chunks). Defaults the model to "
                   "--direction bi --no-causal: inside a chunk everything is visible.")
@click.option("--causal/--no-causal", default=None, help="Stream-capable subsampling and conv module.")
@click.option("--seed", type=int, help="Random seed (weights, batches, augmentation).")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads torch may use (default: every core).")
@click.option("--resume", is_flag=True, help="Continue from RUN_DIR's last checkpoint.")
@click.option("--init", "init", help="Fine-tune: start from this RUN_DIR or shipped name (its model config too).")
@click.option("--vtlp", type=float, help="Frequency-warp augmentation: max relative warp per utterance (e.g. 0.15).")
@click.option("--noise-snr", callback=lambda c, p, v: _snr_range(v), metavar="LO,HI",
              help="Noise augmentation: fresh white/pink noise on half the utterances at an SNR drawn from LO-HI dB "
                   "(mel power; e.g. 3,30).")
@click.option("--input-floor", type=float, metavar="DBFS",
              help="Put a white-noise floor at this level (dB re full scale, e.g. -80) under the features, in "
                   "training and in the exported model: digital silence then looks like a quiet room.")
@click.option("--ema", "ema_decay", type=float, metavar="DECAY",
              help="Keep an exponential moving average of the weights (e.g. 0.995): dev WER scores it and "
                   "model.safetensors holds it; last.safetensors keeps the raw weights.")
@click.option("--stop-after-minutes", type=float, default=0.0, show_default=True,
              help="Stop this invocation after this many minutes with a checkpoint --resume continues from; unlike "
                   "--max-minutes the learning-rate schedule is not shortened (0: no stop).")
@renamed("--time-limit", "--stop-after-minutes", "old_time_limit", type=float)
@click.option("--skip-bad-rows", is_flag=True, help="Skip (and list) bad manifest rows instead of failing.")
def train(mixer, config_file, train_manifests, dev_manifest, run_dir, epochs, max_minutes, max_steps, batch_frames,
          lr, d_model, layers, dirdrop, dirdrop_p, direction, dev_direction, chunk_bi_p, chunk_bi_ms,
          chunk_bi_lookahead_ms, strict_chunk_ms,
          causal, seed, threads, resume,
          init, vtlp, noise_snr, input_floor, ema_decay, stop_after_minutes, old_time_limit,
          skip_bad_rows):
    """Train a CTC encoder; checkpoints (safetensors + config.json) land in RUN_DIR."""
    from edgeasr.extras import require

    require("torch", "safetensors")
    from edgeasr.training.train import resolve_config, resume_config, train as run_training

    stop_after = stop_after_minutes if old_time_limit is None else old_time_limit
    if stop_after < 0:
        raise UserError(f"--stop-after-minutes must be >= 0, got {stop_after:g}")
    for m in (*train_manifests, dev_manifest):
        if not m.is_file():
            raise UserError(f"{m}: manifest not found")
    overrides = {
        "model.mixer": mixer, "model.d_model": d_model, "model.n_layers": layers, "model.dirdrop": dirdrop,
        "model.dirdrop_p": dirdrop_p, "model.direction": direction, "model.causal": causal,
        "model.chunk_bi_p": chunk_bi_p, "model.chunk_bi_ms": chunk_bi_ms,
        "model.chunk_bi_lookahead_ms": chunk_bi_lookahead_ms, "model.strict_chunk_ms": strict_chunk_ms,
        "train.dev_direction": dev_direction,
        "model.input_floor_dbfs": input_floor,
        "train.epochs": epochs, "train.max_minutes": max_minutes, "train.max_steps": max_steps,
        "train.batch_frames": batch_frames,
        "train.lr": lr, "train.seed": seed, "train.threads": threads, "train.init": init, "train.vtlp": vtlp,
        "train.noise_snr": noise_snr, "train.ema_decay": ema_decay}
    if resume:
        if not (run_dir / "config.json").is_file() or not (run_dir / "train_state.json").is_file():
            raise UserError(f"--resume: {run_dir} holds no training checkpoint to continue (no config.json and "
                            "train_state.json); drop --resume to start a new run")
        model_cfg, tc, _ = resume_config(run_dir)
        _check_resume_options(run_dir, model_cfg, tc, overrides, config_file)
        # Budgets may be raised on resume to continue a finished run; the model and recipe stay as trained.
        budgets = {"epochs": epochs, "max_minutes": max_minutes, "max_steps": max_steps, "threads": threads}
        tc = dataclasses.replace(tc, **{k: v for k, v in budgets.items() if v is not None})
    else:
        # --init: the checkpoint's model config is the base; the config file and options may still change it
        base_model = pretrained.load_model(init)[1]["model"] if init else {}
        if mixer is None and config_file is None and not init:
            raise UserError("--mixer or --config (or --init) is required")
        if strict_chunk_ms:  # a strict chunk is the model's whole context: bidirectional within it
            overrides["model.direction"] = direction or "bi"
            overrides["model.causal"] = False if causal is None else causal
        elif direction is None and not init and mixer in ("mha", "none", "deformable"):
            overrides["model.direction"] = "l2r"  # streaming baselines (seed 001) train causally
        model_cfg, tc = resolve_config(config_file, base_model=base_model, overrides=overrides)
    command = "edgeasr " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    summary = run_training(run_dir, model_cfg, tc, list(train_manifests), dev_manifest, resume=resume,
                           console=console, command=command, on_bad_row="skip" if skip_bad_rows else "fail",
                           time_limit_s=stop_after * 60)
    click.echo(json.dumps({k: v for k, v in summary.items() if k != "history"}))


OPTION_NAMES = {"model.n_layers": "--layers", "model.input_floor_dbfs": "--input-floor", "train.ema_decay": "--ema"}
BUDGETS = ("train.epochs", "train.max_minutes", "train.max_steps", "train.threads")  # may change on --resume


def _check_resume_options(run_dir, model_cfg, tc, overrides: dict, config_file) -> None:
    """--resume continues the run as configured: an option (or --config key) that asks for another model or
    recipe than the run's is a one-line error naming it, never silently ignored. Budgets may change."""
    asked = {k: (OPTION_NAMES.get(k) or f"--{k.split('.', 1)[1].replace('_', '-')}", v)
             for k, v in overrides.items() if v is not None}
    if config_file is not None:
        try:
            loaded = json.loads(Path(config_file).read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{config_file}: cannot read training config ({e})") from None
        for section in ("model", "train"):
            for k, v in (loaded.get(section) or {}).items() if isinstance(loaded, dict) else ():
                asked.setdefault(f"{section}.{k}", (f"--config {section}.{k}", v))
    run = {"model": model_cfg.to_dict(), "train": dataclasses.asdict(tc)}
    for key, (option, value) in asked.items():
        if key in BUDGETS:
            continue
        section, name = key.split(".", 1)
        have = run[section].get(name)
        if not _same(value, have):
            raise UserError(f"--resume: {option} {value} differs from the run's {name} = {have} "
                            f"({run_dir}); a resumed run keeps its model and recipe (budgets may change)")


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


COMMANDS = [train]
