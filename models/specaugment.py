"""SpecAugment on fbank features (training only): frequency and time masks, length-aware."""
from __future__ import annotations

import torch


def spec_augment(x: torch.Tensor, lengths: torch.Tensor, freq_masks: int = 2, freq_width: int = 15,
                 time_masks: int = 2, time_width_ratio: float = 0.05, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """Masks with the per-utterance mean (not zero) so normalised features keep their scale."""
    B, T, F = x.shape
    x = x.clone()
    fill = x.mean(dim=(1, 2), keepdim=True)
    for b in range(B):
        L = int(lengths[b])
        for _ in range(freq_masks):
            w = int(torch.randint(0, freq_width + 1, (1,), generator=generator))
            f0 = int(torch.randint(0, max(1, F - w), (1,), generator=generator))
            x[b, :, f0:f0 + w] = fill[b]
        max_w = max(1, int(L * time_width_ratio))
        for _ in range(time_masks):
            w = int(torch.randint(0, max_w + 1, (1,), generator=generator))
            t0 = int(torch.randint(0, max(1, L - w), (1,), generator=generator))
            x[b, t0:t0 + w, :] = fill[b]
    return x


def freq_warp(x: torch.Tensor, max_warp: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Vocal-tract-length perturbation on log-mel features: each utterance's frequency axis is stretched by a factor
    drawn uniformly from [1 - max_warp, 1 + max_warp] (linear interpolation between bins, edges clamped). A new
    speaker's formants sit higher or lower than the training voices'; this shows the model such shifts."""
    if max_warp <= 0:
        return x
    B, T, F = x.shape
    alpha = 1 + (torch.rand(B, 1, generator=generator) * 2 - 1) * max_warp
    pos = (torch.arange(F, dtype=torch.float32)[None, :] / alpha).clamp(0, F - 1)  # source bin of each output bin
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=F - 1)
    w = (pos - lo.float())[:, None, :]
    take = lambda idx: torch.gather(x, 2, idx[:, None, :].expand(B, T, F))  # noqa: E731
    return take(lo) * (1 - w) + take(hi) * w
