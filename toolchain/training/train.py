"""CTC training loop: AdamW, warmup + cosine, gradient clipping, SpecAugment, length bucketing, periodic dev WER,
safetensors checkpoints with resume, CPU / CUDA / DDP (torchrun, gloo on CPU)."""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console
from safetensors.torch import load_file

from edgeasr.models.checkpoint import atomic_save_tensors, atomic_write_json, load_checkpoint, read_config, save_checkpoint
from edgeasr.models.config import EncoderConfig
from edgeasr.models.conformer import Encoder, count_parameters, strict_chunk_frames
from edgeasr.models.specaugment import freq_warp, spec_augment
from edgeasr.progress import progress_bar
from edgeasr.runtimes.errors import UserError
from edgeasr.runtimes.features import FbankOptions
from edgeasr.runtimes.vocab import BLANK_ID, VOCAB, ctc_greedy
from edgeasr.training.dataset import collate, feature_stats, load_utterances, make_batches
from edgeasr.data.manifest import read_manifest
from edgeasr.evaluation.metrics import wer
from edgeasr.training.noise_augment import add_noise, noise_bank, noise_floor
from edgeasr.training.weight_average import WeightAverage

LAST_CONFIG = "last.json"  # config of last.safetensors (resume point); config.json describes model.safetensors
EMA_WEIGHTS = "ema.safetensors"  # the weight EMA at the last checkpoint (with --ema), to resume it


@dataclass
class TrainConfig:
    epochs: int = 40
    max_minutes: float = 0.0  # wall-clock budget; the LR schedule follows whichever budget ends first
    max_steps: int = 0  # step budget (0: epochs decide); equal-step runs make mixer comparisons fair
    batch_frames: int = 16000  # padded fbank frames per batch (per process)
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 400
    clip: float = 5.0
    specaugment: bool = True
    vtlp: float = 0.0  # max relative frequency warp per utterance (0: off); see models/specaugment.freq_warp
    noise_snr: tuple[float, float] | None = None  # fresh white/pink noise at this SNR range (dB, mel power); None: off
    noise_prob: float = 0.5  # share of utterances that get it; see toolchain/noise_augment
    ema_decay: float = 0.0  # weight EMA scored on dev and saved as model.safetensors (0: off); toolchain/weight_average
    init: str = ""  # start from these weights (RUN_DIR or shipped name): fine-tuning keeps its feature normalisation
    eval_every: int = 400
    dev_limit: int = 300
    dev_direction: str = ""  # mode dev WER (and so the best checkpoint) is scored in, e.g. chunk-bi:640ms; "": the model's
    seed: int = 0
    threads: int = 0  # 0: torch default

    def __post_init__(self):
        if self.noise_snr is not None:  # JSON gives a list
            snr = list(self.noise_snr)
            if len(snr) != 2 or not all(isinstance(v, (int, float)) for v in snr) or snr[0] > snr[1]:
                raise UserError(f"noise_snr must be two numbers LO <= HI (dB), got {self.noise_snr!r}")
            self.noise_snr = (float(snr[0]), float(snr[1]))
        if not 0.0 <= self.noise_prob <= 1.0:
            raise UserError(f"noise_prob must be within 0-1, got {self.noise_prob}")
        if not (self.ema_decay == 0.0 or 0.0 < self.ema_decay < 1.0):
            raise UserError(f"ema_decay must be 0 (off) or within (0, 1), e.g. 0.995; got {self.ema_decay}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise UserError(f"unknown train config keys: {', '.join(sorted(unknown))}")
        return cls(**d)


def dev_strict_chunk_frames(cfg: EncoderConfig, frame_shift_ms: float) -> int | None:
    """Dev WER of a strict-chunk model is measured at the middle of its sorted training sizes (640 ms of
    160-1280): one number to pick the best checkpoint by; ship's card has every size."""
    sizes = sorted(cfg.strict_chunk_ms)
    return strict_chunk_frames(sizes[len(sizes) // 2], frame_shift_ms) if sizes else None


def lr_at(step: int, progress: float, tc: TrainConfig) -> float:
    warm = min(1.0, (step + 1) / tc.warmup_steps)
    return tc.lr * warm * max(0.02, 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def utterance_logprobs(model: Encoder, utts, device, batch_frames: int = 40000) -> list[np.ndarray]:
    """Per-utterance ``[T', V]`` CTC log-probs of `model` (in its current direction mode)."""
    was_training = model.training
    model.eval()
    out: list = [None] * len(utts)
    with torch.no_grad():
        for idx in make_batches(utts, batch_frames):
            x, lens, _, _ = collate(utts, idx)
            lp, ol, _ = model(x.to(device), lens.to(device))
            lp = lp.float().cpu().numpy()
            for b, i in enumerate(idx):
                out[i] = lp[b, : int(ol[b])]
    model.train(was_training)
    return out


def evaluate(model: Encoder, utts, device, batch_frames: int = 40000) -> tuple[float, list[str]]:
    """Greedy CTC WER of `model` (in its current direction mode) over `utts`."""
    hyps = [ctc_greedy(lp) for lp in utterance_logprobs(model, utts, device, batch_frames)]
    return wer([u.text for u in utts], hyps), hyps


class _Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def close(self):
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _save_train_state(run_dir: Path, optimizer, meta: dict) -> None:
    tensors = {}
    for i, st in optimizer.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    atomic_save_tensors(run_dir / "train_state.safetensors", tensors)
    atomic_write_json(run_dir / "train_state.json", meta)


def _load_train_state(run_dir: Path, optimizer) -> dict:
    tensors = load_file(str(run_dir / "train_state.safetensors"))
    sd = optimizer.state_dict()
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    sd["state"] = state
    optimizer.load_state_dict(sd)
    return json.loads((run_dir / "train_state.json").read_text())


def train(run_dir: Path, model_cfg: EncoderConfig, tc: TrainConfig, train_manifest: Path | list[Path],
          dev_manifest: Path,
          resume: bool = False, feature_opts: FbankOptions = FbankOptions(), console: Console | None = None,
          command: str = "", on_bad_row: str = "fail", time_limit_s: float = 0.0) -> dict:
    """``time_limit_s`` ends this invocation early with a resumable checkpoint (a preemptible or time-capped
    job) without touching the LR schedule, which follows the run's own budgets across resumes."""
    run_dir = Path(run_dir)
    env = _Dist()
    console = console or Console(stderr=True)
    say = console.print if env.main else (lambda *a, **k: None)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    device = env.device()
    if device.type == "cuda":  # TF32 matmuls: ~free speed on Ampere+, far inside CTC training's noise
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    run_dir.mkdir(parents=True, exist_ok=True)

    # several train manifests are pooled row by row; each keeps its own relative paths and row numbers in errors
    train_manifests = [Path(m) for m in (train_manifest if isinstance(train_manifest, (list, tuple))
                                         else [train_manifest])]
    if len(set(m.resolve() for m in train_manifests)) < len(train_manifests):
        raise UserError("the same --train manifest is given twice (repeat --train only for different corpora)")
    train_entries, train_sets = [], []
    for m in train_manifests:
        rows = read_manifest(m, on_error=on_bad_row, validate_audio=True)
        train_entries += rows
        train_sets.append({"manifest": str(m), "utterances": len(rows),
                           "hours": round(sum(r.duration for r in rows) / 3600, 3)})
    dev_entries = read_manifest(dev_manifest, on_error=on_bad_row, validate_audio=True)[: tc.dev_limit]
    with progress_bar(quiet=not env.main, console=console, transient=False) as prog:
        task = prog.add_task("features", total=len(train_entries) + len(dev_entries), unit="utts")
        adv = lambda n: prog.advance(task, n)  # noqa: E731
        jobs = max(1, (os.cpu_count() or 1) // env.world)
        train_utts = load_utterances(train_entries, feature_opts, jobs=jobs, progress=adv)
        dev_utts = load_utterances(dev_entries, feature_opts, jobs=jobs, progress=adv)
    train_utts = [u for u in train_utts if u.tokens and (len(u.feats) + 3) // 4 >= len(u.tokens)]
    hours = sum(len(u.feats) for u in train_utts) / 100 / 3600
    say(f"train: {len(train_utts)} utterances, {hours:.2f} h"
        + (f" from {len(train_manifests)} manifests" if len(train_manifests) > 1 else "") + f"; dev: {len(dev_utts)}")

    model = Encoder(model_cfg)
    model.frame_shift_ms = feature_opts.frame_shift_ms  # chunk_bi_ms -> frames
    mean, std = feature_stats(train_utts)
    model.feat_mean.copy_(mean)
    model.feat_std.copy_(std)
    if model_cfg.input_floor_dbfs is not None:
        model.feat_floor.copy_(noise_floor(feature_opts, model_cfg.input_floor_dbfs))
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() >= 2 and "lora" not in n else no_decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr, betas=(0.9, 0.98))
    init_from = None
    if tc.init and not resume:
        init_command = _load_init_weights(model, tc.init)
        from edgeasr.training.provenance import describe_init

        init_from = describe_init(tc.init)  # now, while a shipped name still means these weights
        say(f"initialised from {tc.init} (weights and feature normalisation)")
        if init_command and command:
            command = f"{init_command} && {command}"  # a fine-tune's card shows how its starting weights were made
    step, epoch, epoch_pos, elapsed_before, best = 0, 0, 0, 0.0, float("inf")
    history: list[dict] = []
    resumed = None  # the train state a resume continues from
    if resume and (run_dir / "train_state.json").is_file():
        last, _ = load_checkpoint(run_dir, "last.safetensors", _last_config_name(run_dir))
        model.load_state_dict(last.state_dict())
        meta = resumed = _load_train_state(run_dir, optimizer)
        step, epoch, epoch_pos, elapsed_before = meta["step"], meta["epoch"], meta["epoch_pos"], meta["elapsed_s"]
        best, history = meta["best_dev_wer"], meta["history"]
        say(f"resumed from step {step} (epoch {epoch}, best dev WER {best:.3f})")
        before = read_config(run_dir, _last_config_name(run_dir))
        init_from = before.get("init_from")
        previous = before.get("command", "")
        if previous and command and not command.startswith(previous):
            command = f"{previous} && {command}"  # the card must show every command that produced the weights
    model.to(device).train()
    ema = None
    if tc.ema_decay:
        ema = WeightAverage(model, tc.ema_decay, updates=resumed.get("ema_updates", 0) if resumed else 0)
        if resumed:
            if not (run_dir / EMA_WEIGHTS).is_file():
                raise UserError(f"{run_dir / EMA_WEIGHTS}: missing (this run keeps a weight EMA to resume)")
            ema.load_state_dict({k: v.to(device) for k, v in load_file(str(run_dir / EMA_WEIGHTS)).items()})
    scored = ema.model if ema else model  # what dev WER measures and model.safetensors holds
    n_params = count_parameters(model)
    say(f"model: {model_cfg.mixer}, {n_params / 1e6:.2f} M parameters, device {device}, world {env.world}")
    net = model
    if env.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=model.bidirectional and model_cfg.dirdrop != "none")

    batches_per_epoch = len(make_batches(train_utts, tc.batch_frames)) // env.world
    total_steps = max(1, batches_per_epoch * tc.epochs)
    if tc.max_steps > 0:
        total_steps = min(total_steps, tc.max_steps)
    budget_s = tc.max_minutes * 60 if tc.max_minutes > 0 else float("inf")
    start = time.time()
    gen = torch.Generator().manual_seed(tc.seed + env.rank)
    bank = noise_bank(feature_opts).to(device) if tc.noise_snr else None
    meta_common = {"features": feature_opts.to_dict(), "vocab": list(VOCAB), "blank_id": BLANK_ID,
                   "subsampling": model_cfg.subsampling, "train": asdict(tc), "parameters": n_params,
                   "command": command, "hardware": describe_hardware(device, env.world, tc.threads),
                   "data": {"train": str(train_manifests[0]) if len(train_manifests) == 1
                            else [str(m) for m in train_manifests],
                            "dev": str(dev_manifest), "train_hours": round(hours, 3)}}
    if len(train_manifests) > 1:
        meta_common["data"]["train_sets"] = train_sets
    if init_from:
        meta_common["init_from"] = init_from

    def progress_frac() -> float:
        return max(step / total_steps, (elapsed_before + time.time() - start) / budget_s)

    def seconds_left() -> float:
        """Time to whichever ends first: the step budget at this invocation's pace, the minute budget, or
        --stop-after-minutes (the bar's own estimate knows only steps)."""
        ran = time.time() - start
        left = [(total_steps - step) * ran / max(1, step - start_step),
                budget_s - (elapsed_before + ran)]
        if time_limit_s > 0:
            left.append(time_limit_s - ran)
        return max(0.0, min(left))

    def checkpoint(dev_wer: float):
        nonlocal best
        if not env.main:
            return
        meta = {**meta_common, "metrics": {"step": step, "epoch": epoch, "dev_wer": dev_wer}}
        # last and best each keep their own config: config.json always describes model.safetensors
        save_checkpoint(run_dir, model, meta, "last.safetensors", config_name=LAST_CONFIG)
        if ema:
            atomic_save_tensors(run_dir / EMA_WEIGHTS, ema.state_dict())
        if dev_wer <= best:
            best = dev_wer
            save_checkpoint(run_dir, scored, {**meta, "metrics": {**meta["metrics"], "best": True}})
        _save_train_state(run_dir, optimizer, {"step": step, "epoch": epoch, "epoch_pos": epoch_pos,
                                               "best_dev_wer": best, "ema_updates": ema.updates if ema else 0,
                                               "elapsed_s": elapsed_before + time.time() - start,
                                               "history": history})

    def run_eval():
        before = scored.direction
        if tc.dev_direction:  # e.g. a streaming fine-tune keeps the checkpoint that streams best
            scored.set_direction(tc.dev_direction)
        # a strict-chunk model is scored as it will run: in strict chunks of its middle training size
        scored.strict_chunk_frames = dev_strict_chunk_frames(model_cfg, feature_opts.frame_shift_ms)
        dev_wer, _ = evaluate(scored, dev_utts, device) if dev_utts else (float("nan"), [])
        scored.set_direction(before)  # also ends strict chunking
        history.append({"step": step, "epoch": epoch, "dev_wer": dev_wer,
                        "elapsed_s": round(elapsed_before + time.time() - start, 1)})
        say(f"step {step} epoch {epoch}: dev WER {dev_wer * 100:.2f}%")
        checkpoint(dev_wer)
        env.barrier()

    done = progress_frac() >= 1.0
    start_step = step
    stopped = None  # "stop-after-minutes" when this invocation ended early (resume to continue)
    with progress_bar(quiet=not env.main, console=console, transient=False) as prog:
        task = prog.add_task("train", total=total_steps, completed=step, unit="steps")
        while not done and epoch < tc.epochs:
            rng = random.Random(tc.seed * 1000 + epoch)
            batches = make_batches(train_utts, tc.batch_frames, rng)
            batches = batches[: len(batches) // env.world * env.world][env.rank::env.world]
            for bi, idx in enumerate(batches):
                if bi < epoch_pos:  # resuming mid-epoch: same shuffled order, skip what was done
                    continue
                x, lens, targets, tlens = collate(train_utts, idx)
                x = x.to(device)  # augment there: batched masks and warps are a few kernels, not host work per step
                if bank is not None:  # before the warp: noise is added to the audio, the warp stands for the speaker
                    x = add_noise(x, lens, bank, tc.noise_snr, tc.noise_prob, generator=gen)
                if tc.vtlp > 0:
                    x = freq_warp(x, tc.vtlp, generator=gen)
                if tc.specaugment:
                    x = spec_augment(x, lens, generator=gen)
                for g in optimizer.param_groups:
                    g["lr"] = lr_at(step, progress_frac(), tc)
                lp, ol, _ = net(x, lens.to(device))
                loss = F.ctc_loss(lp.transpose(0, 1).float(), targets.to(device), ol, tlens.to(device),
                                  blank=BLANK_ID, reduction="mean", zero_infinity=True)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip)
                if torch.isfinite(gnorm):
                    optimizer.step()
                    if ema:
                        ema.update(model)
                step += 1
                epoch_pos = bi + 1
                prog.update(task, completed=step, description=f"train loss {loss.item():.3f}",
                            seconds_left=seconds_left())
                if step % 50 == 0 and not console.is_terminal:  # logs and pipes get a line, not a bar
                    say(f"step {step}: loss {loss.item():.3f}, lr {optimizer.param_groups[0]['lr']:.2e}, "
                        f"{(time.time() - start) / max(1, step - start_step):.2f} s/step")
                if step % tc.eval_every == 0:
                    run_eval()
                stop_now = time_limit_s > 0 and time.time() - start >= time_limit_s
                if stop_now:
                    stopped = "stop-after-minutes"
                if (progress_frac() >= 1.0 or stop_now) and bi + 1 < len(batches):
                    done = True
                    break
            else:
                epoch, epoch_pos = epoch + 1, 0
                done = progress_frac() >= 1.0 or stopped is not None
    run_eval()
    env.close()
    summary = {"run_dir": str(run_dir), "steps": step, "epochs": epoch, "best_dev_wer": best,
               "wall_s": round(time.time() - start, 1), "total_train_s": round(elapsed_before + time.time() - start, 1),
               "parameters": n_params, "hardware": meta_common["hardware"], "stopped": stopped,
               "history": history}
    if env.main:
        atomic_write_json(run_dir / "summary.json", summary)
    return summary


def _load_init_weights(model: Encoder, name_or_dir: str) -> str:
    """Load weights (and normalisation buffers) from a run or shipped model; returns the command that made them."""
    from edgeasr.pretrained import resolve_model_dir

    src = resolve_model_dir(name_or_dir)
    if src is None:
        raise UserError(f"--init {name_or_dir}: not a checkpoint directory nor a shipped model")
    init, init_config = load_checkpoint(src)
    state = {k: v.float() for k, v in init.state_dict().items()}
    # the input floor follows this run's config (train() has set it), so inits with or without one both fit
    state.pop("feat_floor", None)
    if hasattr(model, "feat_floor"):
        state["feat_floor"] = model.feat_floor
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise UserError(f"--init {name_or_dir}: its weights do not fit this model config ({first})") from None
    return init_config.get("command", "")


def describe_hardware(device: torch.device, world: int, threads: int) -> str:
    """What trained the weights, for the model card: GPU name, or CPU model and torch threads."""
    if device.type == "cuda":
        what = f"{torch.cuda.get_device_name(device)}, CUDA"
    else:
        from edgeasr.machine import cpu_name
        what = f"{cpu_name()}, CPU, {threads or torch.get_num_threads()} torch thread(s)"
    return f"{world} x {what}" if world > 1 else what


def resolve_config(config_file: Path | None, overrides: dict, base_model: dict | None = None
                   ) -> tuple[EncoderConfig, TrainConfig]:
    """``base_model`` (an --init checkpoint's), then the JSON file ``{"model": {...}, "train": {...}}``, then CLI
    overrides (``model.x`` / ``train.y`` keys)."""
    raw = {"model": dict(base_model or {}), "train": {}}
    if config_file is not None:
        try:
            loaded = json.loads(Path(config_file).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{config_file}: cannot read training config ({e})") from None
        if not isinstance(loaded, dict) or set(loaded) - {"model", "train"}:
            raise UserError(f"{config_file}: expected an object with 'model' and 'train' sections")
        raw["model"].update(loaded.get("model", {}))
        raw["train"].update(loaded.get("train", {}))
    for key, value in overrides.items():
        if value is not None:
            section, name = key.split(".", 1)
            raw[section][name] = value
    try:
        return EncoderConfig.from_dict(raw["model"]), TrainConfig.from_dict(raw["train"])
    except (TypeError, ValueError) as e:
        raise UserError(f"invalid training config: {e}") from None


def _last_config_name(run_dir: Path) -> str:
    # runs written before last.json existed kept the last checkpoint's config in config.json
    return LAST_CONFIG if (Path(run_dir) / LAST_CONFIG).is_file() else "config.json"


def resume_config(run_dir: Path) -> tuple[EncoderConfig, TrainConfig, dict]:
    config = read_config(run_dir, _last_config_name(run_dir))
    return EncoderConfig.from_dict(config["model"]), TrainConfig.from_dict(config["train"]), config


