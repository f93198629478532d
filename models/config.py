"""Encoder configuration: everything needed to rebuild a model, stored as JSON beside its safetensors."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

DIRECTIONS = ("l2r", "bi", "alt")  # plain inference modes (no parameter)
CHUNK_BI = "chunk-bi"  # streamable mode with a chunk size: "chunk-bi:640ms" (models.dirdrop.parse_mode)
SUBSAMPLING = 4
DIRDROP_VARIANTS = ("none", "r2l", "both")
# every registered mixer (models/mixers/); listed here so the CLI can offer them without importing torch
MIXERS = ("rwkv", "mamba2", "mha", "deformable", "none")


@dataclass
class EncoderConfig:
    mixer: str = "rwkv"
    mixer_options: dict = field(default_factory=dict)
    n_mels: int = 80
    vocab_size: int = 29
    d_model: int = 144
    n_layers: int = 6
    ff_mult: int = 4
    conv_kernel: int = 15
    dropout: float = 0.1
    subsampling: int = 4  # two stride-2 convolutions
    causal: bool = True  # stream-capable: causal subsampling and conv module, per-frame norms
    dirdrop: str = "none"  # DirDrop variant for bidirectional mixers: none | r2l | both
    dirdrop_p: float = 0.0
    direction: str = "bi"  # inference mode: l2r | bi | alt (switchable after training, also to chunk-bi)
    # share of training steps (of a bidirectional model in bi) run in chunk-bi, with a chunk drawn from chunk_bi_ms
    # (models.dirdrop.draw_chunk_bi); DirDrop still applies within such a step (models.dirdrop.chunked)
    chunk_bi_p: float = 0.0
    chunk_bi_ms: list = field(default_factory=lambda: [160, 320, 640, 1280])
    # look-aheads (ms) drawn with each chunk-bi training chunk (empty: none): each chunk's R2L also reads that much
    # of the next chunk, in the parallel form of models.mixers.bidirectional.r2l_within_chunks
    chunk_bi_lookahead_ms: list = field(default_factory=list)
    # strict-chunk training (seed 001): every training pass cuts the fbank into chunks of a size drawn from this
    # list (ms) and runs the encoder on each chunk alone, no state or context across chunks; empty: off
    strict_chunk_ms: list = field(default_factory=list)
    # a noise floor under the fbank, as if white noise at this level (dB re full scale) were in the audio: digital
    # silence (log of the fbank's energy floor, -23) is far outside speech with noise; None: no floor (old models)
    input_floor_dbfs: float | None = None

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.dirdrop not in DIRDROP_VARIANTS:
            raise ValueError(f"dirdrop must be one of {DIRDROP_VARIANTS}, got {self.dirdrop!r}")
        if self.input_floor_dbfs is not None and not -150.0 <= self.input_floor_dbfs <= 0.0:
            raise ValueError(f"input_floor_dbfs must be within -150..0 dB re full scale, got {self.input_floor_dbfs}")
        if not 0.0 <= self.chunk_bi_p <= 1.0:
            raise ValueError(f"chunk_bi_p must be within 0..1, got {self.chunk_bi_p}")
        if self.chunk_bi_p > 0 and (not self.chunk_bi_ms or any(
                isinstance(m, bool) or not isinstance(m, (int, float)) or m <= 0 for m in self.chunk_bi_ms)):
            raise ValueError(f"chunk_bi_ms must be a non-empty list of positive milliseconds, got {self.chunk_bi_ms}")
        if any(isinstance(m, bool) or not isinstance(m, (int, float)) or m < 0 for m in self.chunk_bi_lookahead_ms):
            raise ValueError(f"chunk_bi_lookahead_ms must list non-negative milliseconds, got "
                             f"{self.chunk_bi_lookahead_ms}")
        if any(isinstance(m, bool) or not isinstance(m, (int, float)) or m <= 0 for m in self.strict_chunk_ms):
            raise ValueError(f"strict_chunk_ms must be positive milliseconds, got {self.strict_chunk_ms}")
        if self.subsampling != SUBSAMPLING:
            raise ValueError("only subsampling=4 is supported")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown encoder config keys: {', '.join(sorted(unknown))}")
        return cls(**d)
