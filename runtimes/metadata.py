"""The ONNX metadata contract (DESIGN.md §3): key names, encoding, and a parser. No torch here, ever.

Every key lives in the ONNX ``metadata_props`` under the ``edgeasr.`` namespace and is a string; structured values
are JSON. A client streams a model knowing only these keys:

- ``graph_kind`` ``full`` | ``step`` | ``chunk``; ``mixer``; ``direction``; ``dirdrop``; ``precision``; ``quant_recipe``
- ``sample_rate``, ``fbank`` (JSON of ``runtimes.features.FbankOptions``) — compute exactly these features
- ``subsampling`` (4 fbank frames -> 1 encoder frame), ``chunk_multiple`` (step inputs: T % chunk_multiple == 0),
  ``chunk_frames`` (recommended fbank frames per chunk), ``lookahead_frames``
- ``vocab`` (JSON list, index = logprob column), ``blank_id``
- ``states`` (JSON list of ``{name, shape (no batch axis), dtype, init}``, in graph order): feed ``in.<name>``
  (batch-first, every element = ``init`` at the start of an utterance) and carry ``out.<name>`` to the next chunk
- ``inputs`` / ``outputs`` (JSON lists of graph I/O names), ``state_input_prefix`` / ``state_output_prefix``
- ``format_version``, ``opset``, ``source_sha256`` (sha256 of the checkpoint weights file)

``read_metadata`` reads them through onnxruntime (the device install has no ``onnx``) and returns typed values.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgeasr.runtimes.errors import UserError

PREFIX = "edgeasr."
FORMAT_VERSION = 1
STATE_INPUT_PREFIX = "in."
STATE_OUTPUT_PREFIX = "out."
GRAPH_KINDS = ("full", "step", "chunk")

JSON_KEYS = ("fbank", "vocab", "states", "inputs", "outputs")
INT_KEYS = ("format_version", "sample_rate", "subsampling", "chunk_multiple", "chunk_frames", "lookahead_frames",
            "blank_id", "opset")
STR_KEYS = ("graph_kind", "mixer", "direction", "dirdrop", "precision", "quant_recipe", "source_sha256",
            "state_input_prefix", "state_output_prefix")
KEYS = ("format_version", "graph_kind", "mixer", "direction", "dirdrop", "precision", "quant_recipe",
        "sample_rate", "fbank", "subsampling", "chunk_multiple", "chunk_frames", "lookahead_frames", "vocab",
        "blank_id", "states", "inputs", "outputs", "state_input_prefix", "state_output_prefix", "source_sha256",
        "opset")
REQUIRED = ("format_version", "graph_kind", "sample_rate", "fbank", "subsampling", "vocab", "blank_id", "states",
            "inputs", "outputs")


class MetadataError(UserError):
    """An ONNX file without (valid) edgeasr metadata."""


def encode_metadata(meta: dict) -> dict[str, str]:
    """Typed values -> ``{"edgeasr.<key>": str}`` (JSON compact and key-sorted: deterministic bytes)."""
    unknown = set(meta) - set(KEYS)
    if unknown:
        raise ValueError(f"unknown metadata keys: {sorted(unknown)}")
    out = {}
    for key in KEYS:
        if key not in meta:
            continue
        v = meta[key]
        out[PREFIX + key] = json.dumps(v, sort_keys=True, separators=(",", ":")) if key in JSON_KEYS else str(v)
    return out


def decode_metadata(props: dict[str, str], source: str = "model") -> dict:
    """``{"edgeasr.<key>": str}`` -> typed dict; raises MetadataError naming ``source`` when keys are missing."""
    raw = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
    if not raw:
        raise MetadataError(f"{source}: no edgeasr metadata (not exported by edgeasr export)")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise MetadataError(f"{source}: edgeasr metadata incomplete (missing {', '.join(missing)})")
    meta = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v) if k in JSON_KEYS else int(v) if k in INT_KEYS else v
        except (ValueError, TypeError) as e:
            raise MetadataError(f"{source}: edgeasr.{k} is malformed ({e})") from None
    if not isinstance(meta["fbank"], dict) or "num_bins" not in meta["fbank"]:
        # a client must compute exactly the training features: never fall back to defaults silently
        raise MetadataError(f"{source}: edgeasr.fbank does not describe the features (needs num_bins and options)")
    if meta["graph_kind"] not in GRAPH_KINDS:
        raise MetadataError(f"{source}: unknown graph kind {meta['graph_kind']!r}")
    if meta["format_version"] > FORMAT_VERSION:
        raise MetadataError(f"{source}: metadata format {meta['format_version']} is newer than this reader "
                            f"({FORMAT_VERSION})")
    return meta


def read_metadata(model_or_path, source: str = "model") -> dict:
    """Typed edgeasr metadata of an ONNX file path or an in-memory ``onnx.ModelProto`` (exporters, calibration).

    A path is read through onnxruntime (``get_modelmeta``) with graph optimisation off, so the device install
    needs no ``onnx`` package; a backend that already holds a session uses ``metadata_from_session`` instead.
    Either way the metadata is checked against the graph's I/O (``check_graph``); ``source`` names an in-memory
    model in messages."""
    if not isinstance(model_or_path, (str, Path)):
        meta = decode_metadata({p.key: p.value for p in model_or_path.metadata_props}, source)
        check_graph(meta, proto_io(model_or_path), source)
        return meta
    path = Path(model_or_path)
    return metadata_from_session(open_unoptimized(path), str(path))


def open_unoptimized(path: Path):
    """An onnxruntime session of ``path`` with graph optimisation off (cheap: for its metadata and I/O), or a
    one-line MetadataError for a missing, empty or unreadable file."""
    if not path.is_file():
        raise MetadataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MetadataError(f"{path}: empty file (0 bytes), not an ONNX model")
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4  # the one-line error below says it; no native log line before it
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # InvalidProtobuf, InvalidGraph, ...
        raise MetadataError(f"{path}: not a readable ONNX file ({type(e).__name__})") from None


def metadata_from_session(sess, source: str, validate: bool = True) -> dict:
    """Typed edgeasr metadata of an onnxruntime ``InferenceSession``, checked against the session's graph I/O
    (``validate=False``: the caller reports ``graph_problems`` itself, as ``edgeasr inspect`` does)."""
    meta = decode_metadata(dict(sess.get_modelmeta().custom_metadata_map), source)
    if validate:
        check_graph(meta, session_io(sess), source)
    return meta


def session_io(sess) -> dict[str, dict[str, list]]:
    """``{"inputs": {name: shape}, "outputs": {name: shape}}`` of an onnxruntime session; symbolic dims are -1."""
    def shapes(vs):
        return {v.name: [d if isinstance(d, int) else -1 for d in (v.shape or [])] for v in vs}

    return {"inputs": shapes(sess.get_inputs()), "outputs": shapes(sess.get_outputs())}


def graph_problems(meta: dict, io: dict[str, dict[str, list]]) -> list[str]:
    """Where the metadata contradicts the graph it describes (each a short phrase), or []: a wrong vocabulary or
    blank id would decode into wrong text (or an IndexError) and a wrong state shape fails only mid-stream, so
    every backend checks this when a model is opened. ``io`` as ``session_io`` returns (symbolic dims are -1)."""
    problems = []
    vocab, blank, outputs = meta["vocab"], meta["blank_id"], io.get("outputs")
    if outputs is not None:  # None: a caller that knows only the inputs (the rest was checked on reading)
        width = (outputs.get("logprobs") or [-1])[-1]
        if "logprobs" not in outputs:
            problems.append("the graph has no logprobs output")
        elif width >= 0 and width != len(vocab):
            problems.append(f"edgeasr.vocab has {len(vocab)} tokens but the logprobs output has {width} columns")
    if not 0 <= blank < len(vocab):
        problems.append(f"edgeasr.blank_id {blank} is outside the vocabulary (0-{len(vocab) - 1})")
    rate = (meta.get("fbank") or {}).get("sample_rate")
    if rate is not None and int(rate) != int(meta["sample_rate"]):
        problems.append(f"edgeasr.sample_rate {meta['sample_rate']} disagrees with edgeasr.fbank sample_rate {rate}")
    bins = int(meta["fbank"]["num_bins"])
    x = io["inputs"].get("x")
    if x is not None and len(x) == 3 and x[2] >= 0 and x[2] != bins:
        problems.append(f"edgeasr.fbank num_bins {bins} but the graph input x has {x[2]} features")
    for spec, (iname, oname) in zip(meta["states"], state_io_names(meta)):
        dims = io["inputs"].get(iname)
        if dims is None:
            problems.append(f"metadata state {spec['name']} has no graph input {iname}")
        elif dims and len(dims) != len(spec["shape"]) + 1 or \
                any(d >= 0 and d != e for d, e in zip(dims[1:], spec["shape"])):
            problems.append(f"state {spec['name']} has shape {spec['shape']} in metadata but the graph input "
                            f"{iname} is {dims[1:]} (without batch)")
        elif outputs is not None and oname not in outputs:
            problems.append(f"metadata state {spec['name']} has no graph output {oname}")
    return problems


def check_graph(meta: dict, io: dict[str, dict[str, list]], source: str) -> None:
    """MetadataError naming ``source`` and the first mismatch between metadata and graph (``graph_problems``)."""
    problems = graph_problems(meta, io)
    if problems:
        raise MetadataError(f"{source}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if problems[1:] else ""))


def proto_io(model) -> dict[str, dict[str, list]]:
    """``session_io`` of an in-memory ``onnx.ModelProto`` (read from its declared value infos; no onnx import)."""
    def shapes(vs):
        return {v.name: [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
                for v in vs}

    init = {i.name for i in model.graph.initializer}
    return {"inputs": shapes(v for v in model.graph.input if v.name not in init),
            "outputs": shapes(model.graph.output)}


def state_io_names(meta: dict) -> list[tuple[str, str]]:
    """[(input name, output name)] per state, in graph order."""
    pi = meta.get("state_input_prefix", STATE_INPUT_PREFIX)
    po = meta.get("state_output_prefix", STATE_OUTPUT_PREFIX)
    return [(pi + s["name"], po + s["name"]) for s in meta["states"]]
