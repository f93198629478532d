"""Training-time augmentation on fbank features: SpecAugment masks and frequency warping (VTLP)."""
import torch

from edgeasr.models.specaugment import freq_warp, spec_augment


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


def _speech_fbank():
    """Real TTS speech (espeak-ng) and its fbank, with the training options."""
    import subprocess
    import tempfile

    import soundfile as sf

    from edgeasr.runtimes.features import FbankOptions, compute_fbank

    with tempfile.TemporaryDirectory() as td:
        wav = f"{td}/s.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", wav, "and the evening and the morning were the third day"],
                       check=True)
        x, sr = sf.read(wav, dtype="float32")
    from edgeasr.runtimes.audio import resample

    x = resample(x, sr, 16000).astype("float32") * 0.5
    return x, FbankOptions(), torch.from_numpy(compute_fbank(x, FbankOptions()))


def test_noise_in_the_feature_domain_matches_mixing_the_waveforms():
    """logaddexp(speech fbank, noise fbank at the drawn SNR) looks like the fbank of speech + noise audio: same
    per-bin means (within 0.1 nats on average; the cross terms of real mixing lower the log where speech and noise
    are equally loud) and the realised SNR as drawn."""
    import numpy as np

    from edgeasr.runtimes.features import compute_fbank
    from edgeasr.training.noise_augment import ACTIVE_DB, add_noise, noise_bank

    x, opts, fx = _speech_fbank()
    bank = noise_bank(opts)
    for colour, snr in ((0, 5.0), (1, 15.0)):
        # the waveform mix: a fresh noise draw of that colour, scaled to the SNR on mel power (the module's measure)
        n = np.random.default_rng(7).standard_normal(x.size)
        if colour == 1:
            from edgeasr.training.noise_augment import _pink

            n = _pink(n)
        fn = torch.from_numpy(compute_fbank((n * 0.01).astype("float32"), opts)).double()
        p = torch.logsumexp(fx.double(), 1)
        active = p > p.max() - ACTIVE_DB / 10 * np.log(10)
        speech_power = p[active].exp().mean()
        scale = float(torch.sqrt(speech_power / torch.logsumexp(fn, 1).exp().mean() * 10 ** (-snr / 10)))
        real = torch.from_numpy(compute_fbank((x + n * 0.01 * scale).astype("float32"), opts)).double()
        y = add_noise(fx[None], torch.tensor([len(fx)]), bank[colour:colour + 1], (snr, snr),
                      generator=torch.Generator().manual_seed(0))[0].double()
        d = y.mean(0) - real.mean(0)  # per-bin mean over frames
        assert d.abs().mean() < 0.1 and d.abs().max() < 0.4  # measured 0.055 and 0.27 (white, 5 dB)
        added = (y.exp() - fx.double().exp()).sum(1).mean()  # mean mel power the augmentation added
        assert abs(10 * np.log10(speech_power / added) - snr) < 0.5
        assert (y >= fx.double() - 1e-4).all()  # adding power never lowers a bin


def test_noise_leaves_padding_and_skipped_utterances_alone():
    from edgeasr.runtimes.features import FbankOptions
    from edgeasr.training.noise_augment import add_noise, noise_bank

    bank = noise_bank(FbankOptions())
    x = torch.randn(4, 300, 80) + 10
    lens = torch.tensor([300, 200, 100, 50])
    y = add_noise(x, lens, bank, (0.0, 10.0), prob=1.0, generator=torch.Generator().manual_seed(0))
    for b, n in enumerate(lens.tolist()):
        assert torch.equal(y[b, n:], x[b, n:]) and not torch.equal(y[b, :n], x[b, :n])
    assert torch.equal(add_noise(x, lens, bank, (0.0, 10.0), prob=0.0), x)
    g = torch.Generator().manual_seed(1)
    hit = [not torch.equal(a, b) for a, b in zip(add_noise(x.repeat(16, 1, 1), lens.repeat(16), bank, (0.0, 10.0),
                                                           prob=0.5, generator=g), x.repeat(16, 1, 1))]
    assert 16 < sum(hit) < 48  # about half of 64


def test_noise_floor_is_the_fbank_of_white_noise_at_that_level():
    """The input floor (EncoderConfig.input_floor_dbfs) equals the mean mel power of real white noise of that RMS,
    fresh draw, computed at the floor's own level (-60 dBFS: ~33 int16 steps, far above kaldi's energy floor)."""
    import numpy as np

    from edgeasr.runtimes.features import FbankOptions, compute_fbank
    from edgeasr.training.noise_augment import noise_floor

    opts = FbankOptions()
    noise = 10 ** (-60 / 20) * np.random.default_rng(11).standard_normal(5 * 16000)
    fb = torch.from_numpy(compute_fbank(noise.astype("float32"), opts)).double()
    measured = torch.logsumexp(fb, 0) - np.log(len(fb))
    d = noise_floor(opts, -60.0).double() - measured  # two finite draws: the narrow low bins vary most
    assert abs(d.mean()) < 0.02 and d.abs().max() < 0.2  # measured -0.006 and 0.13
    # 20 dB lower is the same shape, 20 dB * ln(10)/10 = 4.6 nats down
    assert torch.allclose(noise_floor(opts, -80.0), noise_floor(opts, -60.0) - 2 * np.log(10), atol=1e-5)
