"""Training data: fbank features computed once per run and kept in memory (fp16), length-bucketed batches.

torch is imported only where tensors are made: ``edgeasr eval`` of an ONNX file loads its test set with these same
loaders on a device install, which has no torch."""
from __future__ import annotations

import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from edgeasr.runtimes.audio import load_audio
from edgeasr.runtimes.errors import UserError
from edgeasr.runtimes.features import FbankOptions, compute_fbank
from edgeasr.runtimes.vocab import encode


@dataclass
class Utterance:
    feats: np.ndarray  # [T, F] float16
    tokens: list[int]
    text: str


def _featurize(args) -> np.ndarray:
    path, opts = args
    samples, _ = load_audio(path, opts.sample_rate)
    return compute_fbank(samples, opts).astype(np.float16)


def _featurize_or_error(args) -> np.ndarray | str:
    try:
        return _featurize(args)
    except UserError as e:  # unreadable audio: the caller skips the row and lists it
        return str(e)


def load_utterances(entries, opts: FbankOptions, jobs: int = 2, progress=None,
                    bad: list | None = None) -> list[Utterance]:
    """Featurize every manifest entry (in `jobs` processes); `progress(n)` is called as items finish.
    ``bad``: a list to collect ``(entry, message)`` of rows whose audio cannot be read, which are then left out;
    None: such a row is a UserError."""
    work = [(str(e.audio_filepath), opts) for e in entries]
    fn = _featurize if bad is None else _featurize_or_error
    feats = []
    if jobs <= 1:
        for w in work:
            feats.append(fn(w))
            progress and progress(1)
    else:
        with ProcessPoolExecutor(jobs) as pool:
            for f in pool.map(fn, work, chunksize=16):
                feats.append(f)
                progress and progress(1)
    if bad is not None:
        bad.extend((e, f) for f, e in zip(feats, entries) if isinstance(f, str))
    return [Utterance(f, encode(e.text), e.text) for f, e in zip(feats, entries) if not isinstance(f, str)]


def feature_stats(utts: list[Utterance]) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Global per-bin mean/std (the model's input normalisation)."""
    import torch

    total = sum(len(u.feats) for u in utts)
    s = np.zeros(utts[0].feats.shape[1], np.float64)
    s2 = np.zeros_like(s)
    for u in utts:
        f = u.feats.astype(np.float64)
        s += f.sum(0)
        s2 += (f * f).sum(0)
    mean = s / total
    std = np.sqrt(np.maximum(s2 / total - mean * mean, 1e-8))
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def make_batches(utts: list[Utterance], max_frames: int, rng: random.Random | None = None) -> list[list[int]]:
    """Bucket by length (sorted, then cut at max padded frames); shuffle batch order when rng is given."""
    order = sorted(range(len(utts)), key=lambda i: len(utts[i].feats))
    if rng is not None:  # jitter inside similar lengths so batches differ between epochs
        order = sorted(order, key=lambda i: len(utts[i].feats) * (1 + 0.1 * rng.random()))
    batches, cur, longest = [], [], 0
    for i in order:
        n = len(utts[i].feats)
        if cur and max(longest, n) * (len(cur) + 1) > max_frames:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    if rng is not None:
        rng.shuffle(batches)
    return batches


def collate(utts: list[Utterance], idx: list[int]):
    """-> feats [B,T,F] float32, feat_lens [B], targets (concatenated) [N], target_lens [B]."""
    import torch

    items = [utts[i] for i in idx]
    T = max(len(u.feats) for u in items)
    x = np.zeros((len(items), T, items[0].feats.shape[1]), np.float32)
    for b, u in enumerate(items):
        x[b, :len(u.feats)] = u.feats
    lens = torch.tensor([len(u.feats) for u in items])
    targets = torch.tensor([t for u in items for t in u.tokens], dtype=torch.long)
    tlens = torch.tensor([len(u.tokens) for u in items])
    return torch.from_numpy(x), lens, targets, tlens
