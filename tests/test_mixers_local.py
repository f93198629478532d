"""Local mixers: mha (baseline), none (seed 001 "hard"), deformable (seed 001 "soft").

Tiny dims on purpose (shared 2-core machine): d_model=32, T <= 60, one thread.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgeasr.models.mixers import build_mixer
from edgeasr.models.state import initial_state

torch.set_num_threads(1)

D = 32
NAMES = ("mha", "none", "deformable")
SMALL = {
    "mha": {"heads": 4, "left_context": 7, "dropout": 0.0},
    "none": {},
    "deformable": {"kernel_size": 5, "max_offset": 4.0, "groups": 4, "offset_kernel": 3},
}


def make(name: str, seed: int = 0, **over):
    torch.manual_seed(seed)
    m = build_mixer(name, D, {**SMALL[name], **over})
    if name == "deformable":
        # make offsets really non-zero and fractional (the layer is zero-initialised to a plain conv)
        with torch.no_grad():
            m.offset_conv.weight.normal_(0.0, 0.3)
            m.offset_conv.bias.normal_(0.0, 0.5)
    return m.eval()


def batch(seed: int = 1, T: int = 41, lengths=(41, 29, 17)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), T, D, generator=g)
    return x, torch.tensor(lengths, dtype=torch.int64)


def run_chunks(m, x, chunk: int):
    state = initial_state(m.state_specs(), x.shape[0])
    ys = []
    for s in range(0, x.shape[1], chunk):
        y, state = m.step(x[:, s:s + chunk], state)
        ys.append(y)
    return torch.cat(ys, dim=1)


def max_err_valid(a, b, lengths):
    return max((a[i, :n] - b[i, :n]).abs().max().item() for i, n in enumerate(lengths.tolist()))


# -- 1. streaming == causal full forward, any chunking ----------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_step_matches_l2r_forward_any_chunking(name):
    m = make(name)
    x, lengths = batch(T=53, lengths=(53, 38, 21))
    with torch.no_grad():
        ref = m(x, lengths, "l2r")
        for chunk in (1, 2, 3, 5, 7, 13, x.shape[1]):
            got = run_chunks(m, x, chunk)
            assert got.shape == ref.shape
            assert max_err_valid(got, ref, lengths) <= 1e-5, (name, chunk)


def test_deformable_offsets_are_fractional_and_nonzero():
    m = make("deformable")
    x, _ = batch()
    with torch.no_grad():
        P = m.cache_frames
        o = m._offsets(torch.nn.functional.pad(x, (0, 0, m.offset_kernel - 1, 0)))
        delta = m.max_offset * (torch.tanh(o) - 1.0)
    frac = delta - delta.floor()
    assert (frac > 1e-3).float().mean() > 0.9
    assert delta.std() > 0.3 and delta.min() > -2 * m.max_offset - 1e-6 and delta.max() <= 0
    assert P == 5 - 1 + 8


@pytest.mark.parametrize("max_offset,kernel_size,offset_kernel", [(4.0, 5, 3), (2.5, 5, 3), (1.0, 3, 7)])
def test_deformable_cache_size_is_exact(max_offset, kernel_size, offset_kernel):
    """P = max(K-1+ceil(2M), offset_kernel-1) is enough for saturated offsets, and P-1 is not."""
    torch.manual_seed(0)
    m = build_mixer("deformable", D, {"kernel_size": kernel_size, "max_offset": max_offset,
                                      "offset_kernel": offset_kernel}).eval()
    P = max(kernel_size - 1 + math.ceil(2 * max_offset), offset_kernel - 1)
    assert m.cache_frames == P
    # push every offset to (just inside) the far end of its range: delta -> -2M (+0.1 when 2M is not integer,
    # so the floor lands on the same frame); the furthest frame read is t-(K-1)-ceil(2M).
    target = -2 * max_offset + (0.1 if 2 * max_offset != int(2 * max_offset) else 0.0)
    with torch.no_grad():
        m.offset_conv.weight.zero_()
        tanh_v = target / max_offset + 1.0
        m.offset_conv.bias.fill_(-30.0 if tanh_v <= -1.0 else math.atanh(tanh_v))
        if offset_kernel - 1 > kernel_size - 1 + math.ceil(2 * max_offset):
            # the offset conv is what needs the cache here: make the offsets depend on its oldest tap
            m.offset_conv.bias.zero_()
            m.offset_conv.weight[:, :, 0].normal_(0.0, 0.3)
    x, lengths = batch(T=31, lengths=(31, 31, 31))
    with torch.no_grad():
        ref = m(x, lengths, "l2r")
        assert max_err_valid(run_chunks(m, x, 1), ref, lengths) <= 1e-5
        m.cache_frames = P - 1  # one frame short: streaming must diverge (or the offset conv cannot even run)
        try:
            short_err = max_err_valid(run_chunks(m, x, 1), ref, lengths)
        except RuntimeError:
            short_err = math.inf
        m.cache_frames = P
    assert short_err > 1e-3


# -- 2. padding invariance ("bi") and causality ("l2r") -----------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_bi_padding_invariance(name):
    m = make(name)
    x, lengths = batch()
    x2 = x.clone()
    for i, n in enumerate(lengths.tolist()):
        x2[i, n:] = 1e3 * torch.randn_like(x2[i, n:])
    with torch.no_grad():
        a, b = m(x, lengths, "bi"), m(x2, lengths, "bi")
    assert max_err_valid(a, b, lengths) <= 1e-5
    if name == "mha":  # "bi" really sees the future (non-causal)
        x3 = x.clone()
        x3[:, 10] += 1.0
        with torch.no_grad():
            assert (m(x3, lengths, "bi")[:, :10] - a[:, :10]).abs().max() > 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_l2r_causality(name):
    m = make(name)
    x, lengths = batch()
    with torch.no_grad():
        a = m(x, lengths, "l2r")
        for t in (0, 9, 20):
            x2 = x.clone()
            x2[:, t + 1:] = 1e3 * torch.randn_like(x2[:, t + 1:])
            b = m(x2, lengths, "l2r")
            assert (a[:, :t + 1] - b[:, :t + 1]).abs().max() <= 1e-5, t


@pytest.mark.parametrize("name", NAMES)
def test_rejects_r2l(name):
    m = make(name)
    x, lengths = batch()
    with pytest.raises(ValueError):
        m(x, lengths, "r2l")


def test_mha_left_context_is_bounded():
    m = make("mha")  # left_context=7: frame t sees [t-7, t]
    x, lengths = batch()
    x2 = x.clone()
    x2[:, 5] += 10.0
    with torch.no_grad():
        a, b = m(x, lengths, "l2r"), m(x2, lengths, "l2r")
    assert (a[:, 5:13] - b[:, 5:13]).abs().max() > 1e-3
    assert (a[:, 13:] - b[:, 13:]).abs().max() <= 1e-6


@pytest.mark.parametrize("T", [1, 6, 7, 8, 14, 41, 100])
def test_mha_blocked_l2r_equals_the_full_masked_attention(T):
    """The l2r forward's blocks (each attends to itself and the block before) == one T x T masked softmax with key
    time in [t - left_context, t], at every position (padded ones too: the mask is purely positional)."""
    m = make("mha")
    x = torch.randn(3, T, D, generator=torch.Generator().manual_seed(T))
    with torch.no_grad():
        blocked = m(x, torch.tensor([T, max(1, T - 5), 1]), "l2r")
        naive = m._masked_l2r(x)
    assert blocked.shape == naive.shape == (3, T, D)
    assert (blocked - naive).abs().max().item() <= 1e-5


def test_mha_state_counter():
    m = make("mha")
    specs = {s.name: s for s in m.state_specs()}
    assert specs["k"].shape == (7, D) and specs["v"].shape == (7, D)
    assert specs["valid"].shape == () and specs["valid"].dtype == torch.float32
    x, _ = batch()
    state = initial_state(m.state_specs(), 3)
    with torch.no_grad():
        _, state = m.step(x[:, :3], state)
        assert state["valid"].tolist() == [3.0] * 3
        _, state = m.step(x[:, 3:8], state)
        assert state["valid"].tolist() == [7.0] * 3
        assert torch.equal(state["k"], m.qkv(x[:, 1:8]).chunk(3, -1)[1])


# -- 3. gradients / optimisation --------------------------------------------------------------------------------
@pytest.mark.parametrize("direction", ["l2r", "bi"])
def test_deformable_gradients_reach_offsets_and_loss_drops(direction):
    torch.manual_seed(0)
    m = build_mixer("deformable", D)  # zero-initialised offsets: the gradient must still reach them
    x, lengths = batch()
    target = torch.randn_like(x)
    y = m(x, lengths, direction)
    loss = (y - target).pow(2).mean()
    loss.backward()
    assert m.offset_conv.weight.grad.abs().sum() > 0
    assert m.offset_conv.bias.grad.abs().sum() > 0
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = (m(x, lengths, direction) - target).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_mha_optimisation_step_reduces_loss():
    torch.manual_seed(0)
    m = build_mixer("mha", D, SMALL["mha"])
    x, lengths = batch()
    target = torch.randn_like(x)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = (m(x, lengths, "l2r") - target).pow(2).mean()
        loss.backward()
        assert all(p.grad is not None for p in m.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_none_is_zero_and_stateless():
    m = make("none")
    x, lengths = batch()
    assert sum(p.numel() for p in m.parameters()) == 0
    assert m.state_specs() == []
    assert torch.equal(m(x, lengths, "bi"), torch.zeros_like(x))


# -- 4. ONNX export of the step ----------------------------------------------------------------------------------
class StepWrapper(torch.nn.Module):
    def __init__(self, mixer):
        super().__init__()
        self.mixer = mixer
        self.names = [s.name for s in mixer.state_specs()]

    def forward(self, x, *states):
        y, new = self.mixer.step(x, dict(zip(self.names, states)))
        return (y, *[new[n] for n in self.names])


@pytest.mark.parametrize("name", NAMES)
def test_step_onnx_export_matches_torch(name, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    m = make(name)
    w = StepWrapper(m).eval()
    specs = m.state_specs()
    B = 2
    x0 = torch.randn(B, 4, D)
    st0 = initial_state(specs, B)
    in_names = ["x"] + [f"in.{s.name}" for s in specs]
    out_names = ["y"] + [f"out.{s.name}" for s in specs]
    path = tmp_path / f"{name}_step.onnx"
    with torch.no_grad():
        torch.onnx.export(
            w, (x0, *[st0[s.name] for s in specs]), str(path), dynamo=False, opset_version=17,
            input_names=in_names, output_names=out_names,
            dynamic_axes={"x": {0: "B", 1: "T"}, "y": {0: "B", 1: "T"},
                          **{n: {0: "B"} for n in in_names[1:] + out_names[1:]}},
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"DeformConv", "Mod", "CumSum", "GroupNormalization"}, ops
    for t in list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute if a.t.dims or a.t.raw_data]:
        arr = onnx.numpy_helper.to_array(t)
        if arr.dtype.kind == "f":
            assert np.isfinite(arr).all(), "non-finite constant (-inf mask?) in graph"
    if name == "deformable":
        # torch.gather -> ONNX GatherElements (the sampling); plain Gather only does shape plumbing
        assert "GatherElements" in ops and "Floor" in ops, ops
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    # stream two chunks of different lengths through both, carrying the state
    g = torch.Generator().manual_seed(3)
    st_t = initial_state(specs, B)
    st_o = {s.name: st_t[s.name].numpy() for s in specs}
    for T in (6, 11, 1):
        x = torch.randn(B, T, D, generator=g)
        with torch.no_grad():
            y_t, st_t = m.step(x, st_t)
        outs = sess.run(out_names, {"x": x.numpy(), **{f"in.{n}": v for n, v in st_o.items()}})
        assert outs[0].shape == (B, T, D)
        assert np.abs(outs[0] - y_t.numpy()).max() <= 1e-5, (name, T)
        st_o = dict(zip([s.name for s in specs], outs[1:]))
        for s in specs:
            assert np.abs(st_o[s.name] - st_t[s.name].numpy()).max() <= 1e-5, (name, s.name, T)


# -- 5. parameter counts ------------------------------------------------------------------------------------------
def test_parameter_counts_d144(capsys):
    counts = {}
    for name in NAMES:
        m = build_mixer(name, 144)
        counts[name] = sum(p.numel() for p in m.parameters())
    with capsys.disabled():
        print("\nmixer parameter counts at d_model=144 (defaults):", counts)
    assert counts["none"] == 0
    assert counts["mha"] == 4 * 144 * 144 + 4 * 144
    # offset conv (144 -> 4*5, k=3) + depthwise 5 taps + bias + LayerNorm + Linear
    assert counts["deformable"] == (144 * 20 * 3 + 20) + (144 * 5 + 144) + 2 * 144 + (144 * 144 + 144)
