"""Encoder-level streaming proof: for every mixer, the step form run chunk by chunk equals the causal full
forward (max abs error <= 1e-5 fp32), batch > 1 with different lengths, chunks of 1 and prime encoder frames."""
import pytest
import torch

from edgeasr.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from edgeasr.models.config import EncoderConfig
from edgeasr.models.conformer import Encoder, count_parameters
from edgeasr.models.mixers import mixer_names

SMALL = {"rwkv": {"head_size": 16}, "mamba2": {"headdim": 16, "d_state": 16}, "mha": {"heads": 2, "left_context": 8},
         "deformable": {}, "none": {}}


def small_encoder(mixer: str, **kw) -> Encoder:
    torch.manual_seed(0)
    cfg = EncoderConfig(mixer=mixer, mixer_options=SMALL[mixer], d_model=32, n_layers=2, conv_kernel=5,
                        dropout=0.0, direction="l2r", **kw)
    model = Encoder(cfg).eval()
    with torch.no_grad():  # non-trivial input normalisation and offsets, as after training
        model.feat_mean.normal_()
        model.feat_std.uniform_(0.5, 2.0)
        for name, p in model.named_parameters():
            if "offset" in name:
                p.normal_(0, 0.3)
    return model


def stream(model: Encoder, x: torch.Tensor, chunk_frames: int):
    state, outs = model.initial_state(x.shape[0]), []
    for s in range(0, x.shape[1], chunk_frames):
        xc = x[:, s:s + chunk_frames]
        xc = torch.nn.functional.pad(xc, (0, 0, 0, -xc.shape[1] % 4))
        _, enc, state = model.step(xc, state)
        outs.append(enc)
    return torch.cat(outs, 1), state


@pytest.mark.parametrize("mixer", mixer_names())
def test_step_equals_causal_full_forward(mixer):
    model = small_encoder(mixer)
    B, T = 3, 4 * 29
    x = torch.randn(B, T, 80) * 3 + 10
    lens = torch.tensor([T, 4 * 23 - 1, 4 * 11 + 2])
    with torch.no_grad():
        _, out_lens, full = model(x, lens)
        worst = 0.0
        for enc_frames in (1, 2, 3, 5, 7, 13, 29):
            got, _ = stream(model, x, 4 * enc_frames)
            for b in range(B):
                n = int(out_lens[b])
                worst = max(worst, (got[b, :n] - full[b, :n]).abs().max().item())
    print(f"{mixer}: max abs error step vs full over chunkings = {worst:.2e}")
    assert worst <= 1e-5


@pytest.mark.parametrize("mixer", mixer_names())
def test_state_specs_are_batch_first_and_complete(mixer):
    model = small_encoder(mixer)
    specs = model.state_specs()
    state = model.initial_state(2)
    assert set(state) == {s.name for s in specs}
    _, _, new = model.step(torch.randn(2, 8, 80), state)
    assert set(new) == set(state)
    for s in specs:
        assert new[s.name].shape == (2, *s.shape) and new[s.name].dtype == s.dtype


def test_direction_modes_switch_and_differ():
    model = small_encoder("rwkv")
    x, lens = torch.randn(2, 64, 80), torch.tensor([64, 50])
    outs = {}
    with torch.no_grad():
        for mode in ("l2r", "alt", "bi"):
            model.set_direction(mode)
            outs[mode] = model(x, lens)[2]
    assert not torch.allclose(outs["l2r"], outs["bi"]) and not torch.allclose(outs["alt"], outs["bi"])
    with pytest.raises(ValueError):
        small_encoder("mha").set_direction("alt")


def test_dirdrop_plans_follow_variant():
    import random

    from edgeasr.models.dirdrop import training_directions

    rng = random.Random(0)
    r2l = [d for _ in range(200) for d in training_directions(4, "r2l", 0.5, rng)]
    both = [d for _ in range(200) for d in training_directions(4, "both", 0.5, rng)]
    assert set(r2l) == {"bi", "l2r"} and set(both) == {"bi", "l2r", "r2l"}
    assert set(training_directions(4, "none", 0.9, rng)) == {"bi"}


def test_non_causal_model_refuses_step():
    model = small_encoder("none", causal=False)
    with pytest.raises(ValueError, match="stream-capable"):
        model.step(torch.randn(1, 8, 80), model.initial_state(1))


def test_checkpoint_roundtrip_fp16_and_mismatch(tmp_path):
    model = small_encoder("rwkv")
    save_checkpoint(tmp_path / "run", model, {"features": {}}, dtype=torch.float16)
    loaded, config = load_checkpoint(tmp_path / "run")
    x, lens = torch.randn(1, 40, 80), torch.tensor([40])
    with torch.no_grad():
        assert (loaded(x, lens)[0] - model(x, lens)[0]).abs().max() < 5e-2
    assert not list((tmp_path / "run").glob("*.tmp"))
    import json

    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    cfg["model"]["d_model"] = 48
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / "run")
    (tmp_path / "run" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "run")
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "nowhere")


@pytest.mark.parametrize("mixer", mixer_names())
def test_parameter_counts_at_shipping_size(mixer):
    cfg = EncoderConfig(mixer=mixer, d_model=144, n_layers=6)
    n = count_parameters(Encoder(cfg))
    print(f"{mixer}: {n / 1e6:.2f} M parameters at d_model=144, 6 layers")
    assert 1e6 < n < 8e6


def test_input_floor_lifts_digital_silence_leaves_speech_and_still_streams():
    model = small_encoder("rwkv", input_floor_dbfs=-80.0)
    with torch.no_grad():
        model.feat_floor.uniform_(-8.0, -4.0)  # edgeasr.training.noise_augment.noise_floor fills it in training
        floor = model.feat_floor
        silence = torch.full((1, 4, 80), -23.03)  # log of the fbank's energy floor (1e-10): digital zeros
        plain = lambda v: (v - model.feat_mean) / model.feat_std  # noqa: E731 (normalisation without a floor)
        assert (model.normalize(silence) - plain(floor)).abs().max() < 1e-5  # digital zeros read as the floor
        speech = floor + 12.0 + torch.rand(1, 4, 80)  # loud bins: the floor adds at most log1p(e^-12) = 6e-6
        assert (model.normalize(speech) - plain(speech)).abs().max() < 2e-5
        x = torch.randn(2, 4 * 13, 80) * 3 + 2  # many values near the floor: the smooth part of the max
        lens = torch.tensor([52, 37])
        _, out_lens, full = model(x, lens)
        got, _ = stream(model, x, 4 * 3)
    for b in range(2):
        assert (got[b, :out_lens[b]] - full[b, :out_lens[b]]).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="input_floor_dbfs"):
        EncoderConfig(input_floor_dbfs=6.0)
