"""State hand-over between chunks for the chunked RWKV-6 and Mamba-2 forms, loop-free and without CumSum.

Both recurrences reduce, across chunks, to ``S_c = exp(a_c) ⊙ S_{c-1} + h_c`` (``a_c <= 0`` the chunk's total
log-decay per state row, ``h_c`` its own contribution). Written as one decay-weighted sum over all earlier chunks it
costs ``E²`` for ``E`` chunks: fine for a streaming step (a few chunks) and a training utterance, quadratic for a
long file through a full-sequence graph. ``group`` splits the chunks into groups: the same sum within each group,
then once more over the groups' end states, which costs ``E·group + (E/group)²``. Full-sequence forms use it;
benchmarks/longform_ab_bench.py (shipped models, bi full graphs, ORT, 1 thread): RWKV-6 8 min of audio
20.7 s -> 4.5 s and 1 h fits (one level needs 18 GB per call), Mamba-2 1 h 95 s -> 25 s; 3-10 s inputs pay
~10-25 % for the extra ops.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

# Chunks per group in full-sequence forms (0: one level). Eagerly, two levels only pay from 2 groups' worth of
# chunks on (a training utterance stays one-level); for an hour of audio (~5600 RWKV chunks) their largest tensors
# are ~120 MB against one level's 18 GB (computed). 16 measured faster than 8 at 1 h (31 s vs 44 s, edgeasr bench).
FULL_SEQUENCE_GROUP = 16
_always_group = False  # set while exporting a full-sequence graph: its length is unknown until it runs


@contextmanager
def grouped_hand_over():
    """Trace full-sequence graphs with the two-level hand-over whatever the example length (export uses this)."""
    global _always_group
    before, _always_group = _always_group, True
    try:
        yield
    finally:
        _always_group = before


_step_masks: dict | None = None  # set while tracing a step graph: see shared_step_masks


@contextmanager
def shared_step_masks():
    """Trace a step graph with one set of masks for every layer: all layers of one call see the same number of
    encoder frames (the one-block step forms' only mask size), so the graph builds them once instead of a dozen
    shape and compare nodes per layer and direction (export uses this for step graphs)."""
    global _step_masks
    before, _step_masks = _step_masks, {}
    try:
        yield
    finally:
        _step_masks = before


def masks(n, device, dt):
    """Triangular 0/1 matrices over ``n`` positions (n may be a traced size): lower incl., strictly lower,
    strictly upper. Segment sums are matmuls with these (never CumSum, never a difference of cumulative sums)."""
    if _step_masks is not None:
        if (device, dt) not in _step_masks:
            _step_masks[device, dt] = _masks(n, device, dt)
        return _step_masks[device, dt]
    return _masks(n, device, dt)


def _masks(n, device, dt):
    idx = torch.arange(n, device=device)
    row, col = idx.view(-1, 1), idx.view(1, -1)
    return (row >= col).to(dt), (row > col).to(dt), (row < col).to(dt)


def decay_weights(a: torch.Tensor, size: int | None = None, exclusive: bool = False) -> torch.Tensor:
    """a ``[..., E]`` (log-decays <= 0) -> ``[..., E, E]``: ``W[c, e] = exp(sum_{e<e'<=c} a[e'])`` for ``e <= c``, 0
    above the diagonal; ``exclusive``: ``exp(sum_{e<e'<c} a[e'])`` for ``e < c`` (the state *entering* c). The segment
    sum is one matmul with a triangular ones matrix (no CumSum, no subtraction of cumulative sums) and only
    non-positive numbers are exponentiated. ``size``: E when it is a constant (the masks then fold into a graph)."""
    incl, below, _ = masks(a.shape[-1] if size is None else size, a.device, a.dtype)
    upto = below if exclusive else incl
    return torch.exp(upto @ (a.unsqueeze(-1) * below)) * upto


def _one_level(h: torch.Tensor, a: torch.Tensor, size: int | None = None, before: bool = False) -> torch.Tensor:
    """``S[c] = sum_{e<=c} exp(sum_{e<e'<=c} a[e']) h[e]``, decay-row-major: h ``[..., K, E, V]``, a ``[..., K, E]``;
    ``before``: the state entering each position instead, ``S[c-1]`` (zero at c = 0). Plain matmuls with no
    reshapes: each one costs a run of shape ops per call in an exported graph."""
    return decay_weights(a, size, before) @ h


def scan_chunk_states(h: torch.Tensor, a: torch.Tensor, group: int = 0) -> torch.Tensor:
    """States after each chunk: ``S[c] = exp(a[c]) ⊙ S[c-1] + h[c]`` with ``S[-1] = 0`` (``a[0]`` is unused).

    h: ``[..., E, K, V]``; a: ``[..., E, K]`` (non-positive log-decays acting on the K axis; K may be 1).
    Returns ``[..., E, K, V]``. ``group > 0`` uses two levels (groups of ``group`` chunks) for at least two groups'
    worth of chunks, or always inside ``grouped_hand_over()``."""
    d = h.dim()  # non-negative dims throughout: the ONNX exporter mistranslates some negative ones
    h, a = h.transpose(d - 3, d - 2), a.transpose(d - 3, d - 2)  # [.., K, E, V], [.., K, E]
    E = a.shape[-1]
    if group <= 0 or not (_always_group or E >= 2 * group):
        return _one_level(h, a).transpose(d - 3, d - 2)
    pad = (group - E % group) % group  # zero contributions with unit decay past the end change nothing
    V = h.shape[-1]
    both = F.pad(torch.cat([h, a.unsqueeze(-1)], dim=-1), (0, 0, 0, pad))  # one dynamic Pad: fewer graph ops
    n = (E + pad) // group
    both = both.reshape(-1, group, V + 1)  # [(.., K, n), G, V+1]: groups as independent rows
    hg, ag = both[..., :V], both[..., V]
    local = _one_level(hg, ag, group)  # as if each group started from a zero state
    # [(.., K), n, V] -> [(.., K, n), 1, V]: the true state entering each group (zero for the first)
    before = _one_level(local[:, -1].reshape(-1, n, V), ag.sum(-1).reshape(-1, n), before=True).reshape(-1, 1, V)
    incl, _, _ = masks(group, a.device, a.dtype)
    into = (incl @ ag.unsqueeze(-1)).squeeze(-1)  # [(.., K, n), G]: decay from the group's start through each chunk
    states = (local + torch.exp(into).unsqueeze(-1) * before).reshape(*h.shape[:-2], -1, V)
    return states[..., :E, :].transpose(d - 3, d - 2)
