"""Training-time augmentation on fbank features: SpecAugment masks and frequency warping (VTLP)."""
import torch

from models.specaugment import freq_warp, spec_augment


def test_spec_augment_masks_with_the_utterance_mean_inside_its_length():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 200, 80)
    lens = torch.tensor([200, 120, 50])
    before = x.clone()
    y = spec_augment(x, lens, generator=g)
    assert torch.equal(x, before)  # the input is not modified in place
    assert y.shape == x.shape and not torch.equal(x, y)
    changed = (y != x)
    # past an utterance's length only whole frequency columns are masked: time masks stay inside the length
    assert (changed[2, 50:] == changed[2, 50:51]).all()
    assert changed[:, :, :].any(dim=2).sum() > changed[:, :, :].all(dim=2).sum()  # masks are partial, not all


def test_freq_warp_off_is_identity_and_unit_factor_is_exact():
    x = torch.randn(2, 30, 80)
    assert freq_warp(x, 0.0) is x
    g = torch.Generator().manual_seed(1)
    y = freq_warp(x, 1e-9, generator=g)  # factor ~1: interpolation weights ~0, the same bins come back
    assert torch.allclose(x, y, atol=1e-6)


def test_freq_warp_moves_a_formant_peak_by_the_drawn_factor():
    """A single peak at bin 40 lands at 40 * alpha (within one bin) for factors above and below 1."""
    F = 80
    x = torch.zeros(64, 5, F)
    x[:, :, 40] = 1.0
    g = torch.Generator().manual_seed(2)
    y = freq_warp(x, 0.2, generator=g)
    peaks = y[:, 0].argmax(dim=1).float()
    g = torch.Generator().manual_seed(2)
    alpha = 1 + (torch.rand(64, 1, generator=g) * 2 - 1) * 0.2
    assert ((peaks - 40 * alpha[:, 0]).abs() <= 1.0).all()
    assert peaks.min() < 37 and peaks.max() > 43  # both directions are drawn
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert torch.allclose(y[:, 0], y[:, 4])  # one factor per utterance, the same for every frame


def test_spec_augment_mask_sizes_stay_within_their_limits():
    """Two frequency masks of at most 15 bins, two time masks of at most 5 % of the utterance each, drawn per
    utterance (batched draws: every utterance gets its own masks)."""
    g = torch.Generator().manual_seed(3)
    B, T, F = 200, 300, 80
    x = torch.randn(B, T, F) + 10  # far from the fill value: every masked cell is visible
    lens = torch.randint(100, T + 1, (B,), generator=g)
    y = spec_augment(x, lens, generator=g)
    masked = y != x
    full_cols = masked.all(dim=1)  # [B, F]: frequency masks cover every frame
    assert (full_cols.sum(1) <= 30).all() and full_cols.any(1).float().mean() > 0.8
    rows = masked.all(dim=2)  # [B, T]: time masks cover every bin
    for b in range(B):
        L = int(lens[b])
        assert not rows[b, L:].any() and rows[b].sum() <= 2 * max(1, int(L * 0.05))
    assert len({tuple(full_cols[b].nonzero().flatten().tolist()) for b in range(B)}) > B // 2
