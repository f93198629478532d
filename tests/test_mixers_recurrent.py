"""RWKV-6 and Mamba-2 mixers: chunked parallel form == recurrence, streaming == full L2R, padding invariance,
training sanity, parameter counts, and ONNX export of the step form (opset 17, no CumSum) with ORT parity."""
from __future__ import annotations

import pytest
import torch

from edgeasr.models.mixers import build_mixer, flip_valid
from edgeasr.models.mixers.mamba2 import ssd_chunked
from edgeasr.models.mixers.rwkv import default_head_size, wkv_chunked
from edgeasr.models.state import initial_state

torch.set_num_threads(1)

D = 64
# tiny configurations with 2 heads each
OPTIONS = {
    "rwkv": {"head_size": 32, "lora_dim": 8, "decay_lora_dim": 8},
    "mamba2": {"headdim": 64, "expand": 2, "d_state": 16},
}
MIXERS = list(OPTIONS)
TOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def make(name: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    m = build_mixer(name, D, {**OPTIONS[name], **extra})
    m.eval()
    return m


def valid_max_err(a: torch.Tensor, b: torch.Tensor, lengths: torch.Tensor) -> float:
    return max((a[i, :n] - b[i, :n]).abs().max().item() for i, n in enumerate(lengths.tolist()))


# ---------------------------------------------------------------------------------------------------------------
# 1. chunked parallel form == naive sequential recurrence
# ---------------------------------------------------------------------------------------------------------------
def naive_wkv(r, k, v, w, u, S):
    """Textbook RWKV-6: o_t = r_t (diag(u) k_tᵀ v_t + S_{t-1});  S_t = diag(w_t) S_{t-1} + k_tᵀ v_t (float64)."""
    B, T, H, K = r.shape
    out = torch.zeros(B, T, H, K, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            s = S[b, h].clone()
            for t in range(T):
                kv = torch.outer(k[b, t, h], v[b, t, h])
                out[b, t, h] = r[b, t, h] @ (torch.diag(u[h]) @ kv + s)
                s = torch.diag(w[b, t, h]) @ s + kv
            S[b, h] = s
    return out, S


def naive_ssd(X, dA, Bm, Cm, h0):
    """h_t = exp(dA_t) h_{t-1} + X_t ⊗ B_t;  y_t = h_t · C_t (float64)."""
    b, T, H, P = X.shape
    Y = torch.zeros(b, T, H, P, dtype=torch.float64)
    h = h0.clone()
    for t in range(T):
        for j in range(H):
            h[:, j] = torch.exp(dA[:, t, j])[:, None, None] * h[:, j] + X[:, t, j, :, None] * Bm[:, t, None, :]
            Y[:, t, j] = torch.einsum("bpn,bn->bp", h[:, j], Cm[:, t])
    return Y, h


@pytest.mark.parametrize("T,chunk", [(1, 32), (5, 32), (32, 32), (33, 32), (70, 32), (70, 16), (70, 8), (29, 7)])
@pytest.mark.parametrize("decay", ["mixed", "strong", "adversarial"])
@pytest.mark.parametrize("group", [0, 2, 3])  # 0: one-level state hand-over; else groups of chunks (chunk_scan)
def test_wkv_chunked_matches_recurrence(T, chunk, decay, group):
    g = torch.Generator().manual_seed(T * 31 + chunk)
    B, H, K = 2, 2, 32
    r, k, v = (torch.randn(B, T, H, K, generator=g) * 0.5 for _ in range(3))
    lo, hi = (-8.0, 2.0) if decay == "mixed" else (0.5, 3.0)  # strong: per-frame w down to exp(-20)
    d = lo + (hi - lo) * torch.rand(B, T, H, K, generator=g)
    if decay == "adversarial":  # strong decays at each chunk start, then weak: large cumulative sums, tiny segments
        d = torch.full((B, T, H, K), -8.0) + torch.rand(B, T, H, K, generator=g)
        for s in range(4):
            d[:, s::chunk] = 3.0
    u = torch.randn(H, K, generator=g) * 0.5
    S0 = torch.randn(B, H, K, K, generator=g) * 0.5
    o, S = wkv_chunked(r, k, v, -torch.exp(d), u, S0, chunk, group)
    assert o.dtype == torch.float32 and S.dtype == torch.float32
    ref_o, ref_S = naive_wkv(*(t.double() for t in (r, k, v)), torch.exp(-torch.exp(d.double())), u.double(),
                             S0.double().clone())
    assert (o.double() - ref_o).abs().max().item() <= TOL
    assert (S.double() - ref_S).abs().max().item() <= TOL


@pytest.mark.parametrize("T,chunk", [(1, 32), (5, 32), (32, 32), (33, 32), (70, 32), (70, 8), (29, 7)])
@pytest.mark.parametrize("decay", ["mixed", "strong"])
@pytest.mark.parametrize("group", [0, 2, 3])
def test_ssd_chunked_matches_recurrence(T, chunk, decay, group):
    g = torch.Generator().manual_seed(T * 17 + chunk)
    b, H, P, N = 2, 2, 16, 8
    X = torch.randn(b, T, H, P, generator=g) * 0.5
    lo, hi = (-8.0, 1.0) if decay == "mixed" else (1.0, 3.0)
    dA = -torch.exp(lo + (hi - lo) * torch.rand(b, T, H, generator=g))  # down to exp(-20) per frame
    Bm, Cm = (torch.randn(b, T, N, generator=g) * 0.5 for _ in range(2))
    h0 = torch.randn(b, H, P, N, generator=g) * 0.5
    Y, h = ssd_chunked(X, dA, Bm, Cm, h0, chunk, group)
    ref_Y, ref_h = naive_ssd(X.double(), dA.double(), Bm.double(), Cm.double(), h0.double())
    assert (Y.double() - ref_Y).abs().max().item() <= TOL
    assert (h.double() - ref_h).abs().max().item() <= TOL


def strengthen_decays(m):
    """Push the L2R core's decays far beyond the init (per-frame decay factors down to ~exp(-20))."""
    c = m.l2r
    with torch.no_grad():
        if m.name == "rwkv":
            c.time_decay.uniform_(-8.0, 3.0)
        else:
            c.A_log.uniform_(0.0, 3.0)
            c.dt_bias.add_(3.0)


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("T", [7, 32, 45, 70])
@pytest.mark.parametrize("strong", [False, True])
def test_module_forward_matches_reference(name, T, strong):
    m = make(name)
    if strong:
        strengthen_decays(m)
    assert _forward_vs_reference(m, T, seed=1) <= TOL


def _forward_vs_reference(m, T: int, seed: int) -> float:
    """Max |full l2r forward - per-frame recurrence| on a random batch of 2."""
    torch.manual_seed(seed)
    x = torch.randn(2, T, D)
    with torch.no_grad():
        return (m(x, torch.full((2,), T), "l2r") - m.l2r._reference(x)).abs().max().item()


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("T", [100, 137])
def test_long_forward_uses_groups_and_matches_reference(name, T):
    """Past two groups' worth of chunks the full forward takes the two-level hand-over (chunk_len 2: 50-69 chunks,
    groups of 16 with padding); it still equals the per-frame recurrence, with strong decays too."""
    from edgeasr.models.mixers import chunk_scan

    m = make(name, chunk_len=2)
    strengthen_decays(m)
    assert (T // 2 + 1) >= 2 * chunk_scan.FULL_SEQUENCE_GROUP
    assert _forward_vs_reference(m, T, seed=3) <= TOL


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("chunk_len", [3, 8, 16, 32])
def test_block_length_is_a_speed_knob_only(name, chunk_len):
    """The chunked form's block length (RWKV's default 8 was picked for speed, benchmarks/rwkv_chunk_bench.py)
    leaves the output equal to the per-frame recurrence, strong decays included."""
    m = make(name, chunk_len=chunk_len)
    strengthen_decays(m)
    assert _forward_vs_reference(m, 45, seed=4) <= TOL


# ---------------------------------------------------------------------------------------------------------------
# 2. streaming (step, any chunking) == forward(..., "l2r") on valid frames
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 13, None])
def test_step_chunks_match_full_l2r(name, chunk):
    m = make(name)
    torch.manual_seed(2)
    T = 41
    lengths = torch.tensor([41, 30, 17])
    x = torch.randn(3, T, D)
    with torch.no_grad():
        full = m(x, lengths, "l2r")
        state = initial_state(m.state_specs(), 3)
        for spec in m.state_specs():
            assert state[spec.name].shape == (3, *spec.shape)
        ys, c = [], chunk or T
        for s in range(0, T, c):
            y, new_state = m.step(x[:, s:s + c], state)
            assert set(new_state) == set(state)
            for k2 in state:
                assert new_state[k2].shape == state[k2].shape and new_state[k2].dtype == state[k2].dtype
            state = new_state
            ys.append(y)
        streamed = torch.cat(ys, dim=1)
    assert valid_max_err(streamed, full, lengths) <= TOL


# ---------------------------------------------------------------------------------------------------------------
# 3. padding invariance and direction semantics
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("direction", ["l2r", "r2l", "bi"])
def test_padding_invariance(name, direction):
    m = make(name)
    torch.manual_seed(3)
    T = 45
    lengths = torch.tensor([45, 33, 10])
    x = torch.randn(3, T, D)
    garbage = x.clone()
    pad = torch.arange(T).unsqueeze(0) >= lengths.unsqueeze(1)
    garbage[pad] = torch.randn(int(pad.sum()), D) * 100.0
    with torch.no_grad():
        y1 = m(x, lengths, direction)
        y2 = m(garbage, lengths, direction)
        # and each sequence alone, unpadded
        alone = [m(x[i:i + 1, :n], lengths[i:i + 1], direction)[0] for i, n in enumerate(lengths.tolist())]
    for i, n in enumerate(lengths.tolist()):  # padded frames are zeroed before mixing: bit-identical
        assert torch.equal(y1[i, :n], y2[i, :n])
    for i, n in enumerate(lengths.tolist()):
        assert (y1[i, :n] - alone[i]).abs().max().item() <= TOL


@pytest.mark.parametrize("name", MIXERS)
def test_directions(name):
    m = make(name)
    assert type(m).bidirectional is True
    l2r_params = {id(p) for p in m.l2r.parameters()}
    assert not l2r_params & {id(p) for p in m.r2l.parameters()}  # direction-specific weights
    torch.manual_seed(4)
    T = 20
    lengths = torch.tensor([T, 14])
    x = torch.randn(2, T, D)
    x2 = x.clone()
    x2[:, 8] += 1.0  # perturb frame 8
    with torch.no_grad():
        ys = {d: (m(x, lengths, d), m(x2, lengths, d)) for d in ("l2r", "r2l", "bi")}
        assert torch.equal(ys["l2r"][0][:, :8], ys["l2r"][1][:, :8])  # causal
        assert not torch.allclose(ys["l2r"][0][:, 8:], ys["l2r"][1][:, 8:])
        assert torch.equal(ys["r2l"][0][0, 9:], ys["r2l"][1][0, 9:])  # anti-causal
        assert torch.equal(ys["r2l"][0][1, 9:14], ys["r2l"][1][1, 9:14])
        assert not torch.allclose(ys["r2l"][0][:, :9], ys["r2l"][1][:, :9])
        # r2l is the R2L core on the valid-flipped sequence; bi is the average
        manual = flip_valid(m.r2l(flip_valid(x, lengths)), lengths)
        assert valid_max_err(ys["r2l"][0], manual, lengths) <= TOL
        avg = 0.5 * (ys["l2r"][0] + ys["r2l"][0])
        assert valid_max_err(ys["bi"][0], avg, lengths) <= TOL
    with pytest.raises(ValueError):
        m(x, lengths, "sideways")


# ---------------------------------------------------------------------------------------------------------------
# 4. training sanity
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MIXERS)
def test_backward_and_optimizer_steps(name):
    m = make(name)
    m.train()
    torch.manual_seed(5)
    lengths = torch.tensor([40, 25])
    x = torch.randn(2, 40, D)
    target = torch.randn(2, 40, D) * 0.5
    mask = (torch.arange(40).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1).float()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)

    def loss_fn():
        y = m(x, lengths, "bi")
        return (((y - target) ** 2) * mask).sum() / mask.sum()

    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        for n_, p in m.named_parameters():
            assert p.grad is not None, n_
            assert torch.isfinite(p.grad).all(), n_
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", MIXERS)
def test_autocast_keeps_state_fp32(name):
    m = make(name)
    x = torch.randn(2, 12, D)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x, torch.tensor([12, 9]), "bi")
        _, state = m.step(x, initial_state(m.state_specs(), 2))
    assert torch.isfinite(y.float()).all()
    recurrent = "wkv" if name == "rwkv" else "ssm"
    assert state[recurrent].dtype == torch.float32


# ---------------------------------------------------------------------------------------------------------------
# 5. parameter counts at d_model=144 (default options)
# ---------------------------------------------------------------------------------------------------------------
def test_default_options_and_param_counts():
    assert default_head_size(64) == 32 and default_head_size(144) == 36
    for name in MIXERS:
        torch.manual_seed(0)
        m = build_mixer(name, 144)
        n = sum(p.numel() for p in m.parameters())
        n_dir = sum(p.numel() for p in m.l2r.parameters())
        specs = {s.name: s.shape for s in m.state_specs()}
        print(f"{name} d_model=144: {n} parameters ({n_dir} per direction), states {specs}")
        y = m(torch.randn(1, 9, 144), torch.tensor([9]), "bi")
        assert y.shape == (1, 9, 144)


# ---------------------------------------------------------------------------------------------------------------
# 6. ONNX export of the step form (opset 17, TorchScript exporter), ORT parity, no CumSum
# ---------------------------------------------------------------------------------------------------------------
class _StepWrapper(torch.nn.Module):
    def __init__(self, mixer):
        super().__init__()
        self.mixer = mixer
        self.names = [s.name for s in mixer.state_specs()]

    def forward(self, x, *states):
        y, new = self.mixer.step(x, dict(zip(self.names, states)))
        return (y, *[new[n] for n in self.names])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", MIXERS)
def test_step_onnx_export_matches_torch(name, tmp_path):
    import onnx
    import onnxruntime as ort

    m = make(name)
    wrapper = _StepWrapper(m).eval()
    specs = m.state_specs()
    torch.manual_seed(6)
    B, T = 2, 4
    x = torch.randn(B, T, D)
    states = [torch.randn(B, *s.shape) * 0.5 for s in specs]
    path = tmp_path / f"{name}_step.onnx"
    in_names = ["x"] + [f"in.{s.name}" for s in specs]
    out_names = ["y"] + [f"out.{s.name}" for s in specs]
    with torch.no_grad():
        torch.onnx.export(wrapper, (x, *states), str(path), dynamo=False, opset_version=17,
                          input_names=in_names, output_names=out_names,
                          dynamic_axes={n: {0: "batch"} for n in in_names + out_names})
        expected = wrapper(x, *states)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert "CumSum" not in ops and "GroupNormalization" not in ops, ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {n: t.numpy() for n, t in zip(in_names, (x, *states))}
    got = sess.run(out_names, feeds)
    for n, e, g in zip(out_names, expected, got):
        assert g.shape == tuple(e.shape), n
        assert abs(torch.from_numpy(g) - e).max().item() <= TOL, n
    # a different batch through the same graph
    feeds3 = {n: torch.randn(3, *t.shape[1:]).numpy() for n, t in zip(in_names, (x, *states))}
    got3 = sess.run(out_names, feeds3)
    with torch.no_grad():
        exp3 = wrapper(*(torch.from_numpy(feeds3[n]) for n in in_names))
    for n, e, g in zip(out_names, exp3, got3):
        assert abs(torch.from_numpy(g) - e).max().item() <= TOL, n


@pytest.mark.parametrize("E", [1, 2, 5, 16, 33, 100])
@pytest.mark.parametrize("group", [2, 4, 16])
@pytest.mark.parametrize("K", [1, 8])  # 1: Mamba-2's scalar decay per head; 8: RWKV's decay per key
def test_grouped_state_hand_over_equals_one_level(E, group, K):
    """The two-level hand-over (what full-sequence graphs trace) == the one-level decay-weighted sum, float64,
    including padding to whole groups and decays strong enough to wipe the state within a group."""
    from edgeasr.models.mixers.chunk_scan import grouped_hand_over, scan_chunk_states

    g = torch.Generator().manual_seed(E * 100 + group + K)
    h = torch.randn(2, 3, E, K, 5, generator=g, dtype=torch.float64)
    a = -torch.exp(torch.empty(2, 3, E, K, dtype=torch.float64).uniform_(-6.0, 3.0, generator=g))
    with grouped_hand_over():
        grouped = scan_chunk_states(h, a, group)
    assert grouped.shape == h.shape
    assert (grouped - scan_chunk_states(h, a, 0)).abs().max().item() <= 1e-12
    S = torch.zeros_like(h[..., 0, :, :])  # and the recurrence it stands for
    for c in range(E):
        S = torch.exp(a[..., c, :]).unsqueeze(-1) * S + h[..., c, :, :]
    assert (grouped[..., -1, :, :] - S).abs().max().item() <= 1e-12
