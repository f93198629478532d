"""The three graph kinds as thin ``nn.Module`` wrappers around an ``Encoder`` (what ``torch.onnx.export`` traces).

- ``FullGraph``:  ``x [B,T,F], x_lens [B]`` -> ``logprobs [B,T',V], out_lens [B]`` (any direction mode)
- ``StepGraph``:  ``x [B,T,F], in.<state>...`` -> ``logprobs, encoder_out, out.<state>...`` (L2R, or chunk-bi:
  one whole chunk per call, R2L from its initial state within it)
- ``ChunkGraph``: ``x [B,T,F]`` -> ``logprobs`` (seed 001 strict chunk: each chunk alone, no state; any direction)
"""
from __future__ import annotations

import torch
from torch import nn

from edgeasr.models.conformer import Encoder
from edgeasr.runtimes.metadata import STATE_INPUT_PREFIX, STATE_OUTPUT_PREFIX


class FullGraph(nn.Module):
    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    input_names = ["x", "x_lens"]
    output_names = ["logprobs", "out_lens"]

    def forward(self, x, x_lens):
        logprobs, out_lens, _ = self.encoder(x, x_lens)
        return logprobs, out_lens


class ChunkGraph(nn.Module):
    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    input_names = ["x"]
    output_names = ["logprobs"]

    def forward(self, x):
        lens = torch.ones_like(x[:, :, 0]).sum(dim=1).to(torch.int64)  # every frame valid; keeps T dynamic
        return self.encoder(x, lens)[0]


class StepGraph(nn.Module):
    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder
        self.names = [s.name for s in encoder.state_specs()]
        self.input_names = ["x"] + [STATE_INPUT_PREFIX + n for n in self.names]
        self.output_names = ["logprobs", "encoder_out"] + [STATE_OUTPUT_PREFIX + n for n in self.names]

    def forward(self, x, *states):
        logprobs, enc, new = self.encoder.step(x, dict(zip(self.names, states)))
        return (logprobs, enc, *[new[n] for n in self.names])


def build(kind: str, encoder: Encoder) -> nn.Module:
    return {"full": FullGraph, "step": StepGraph, "chunk": ChunkGraph}[kind](encoder).eval()


def dynamic_axes(kind: str, wrapper: nn.Module) -> dict:
    bt = {0: "batch", 1: "frames"}
    bto = {0: "batch", 1: "out_frames"}
    if kind == "full":
        return {"x": bt, "x_lens": {0: "batch"}, "logprobs": bto, "out_lens": {0: "batch"}}
    if kind == "chunk":
        return {"x": bt, "logprobs": bto}
    axes = {"x": bt, "logprobs": bto, "encoder_out": bto}
    axes.update({n: {0: "batch"} for n in wrapper.input_names[1:] + wrapper.output_names[2:]})
    return axes
