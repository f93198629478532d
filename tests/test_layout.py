"""The package layout's promises: one ``edgeasr`` namespace, no import cycles, no library module importing the CLI,
a runtime that never imports torch/scipy/onnx, and a CLI that starts (and runs the device commands) without them."""
import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"toolchain": "edgeasr", "runtimes": "edgeasr.runtimes", "models": "edgeasr.models",
           "exporters": "edgeasr.exporters", "calibration": "edgeasr.calibration"}
DEVICE_FORBIDDEN = ("torch", "scipy", "onnx", "onnx_graphsurgeon", "safetensors")


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, pkg in FOLDERS.items():
        for f in (ROOT / folder).rglob("*.py"):
            parts = [p for p in f.relative_to(ROOT / folder).with_suffix("").parts if p not in ("__init__",)]
            mods[".".join([pkg, *parts]) if parts else pkg] = f
    return mods


def _imports(path: Path) -> set[str]:
    """Every absolute import in a file, module-level or inside a function (a lazy import is still a dependency)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        deps = set()
        for m in _imports(path):
            while m and m not in mods:
                m = m.rpartition(".")[0]
            if m and m != name:
                deps.add(m)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_no_library_module_imports_the_cli():
    bad = {n: sorted(d for d in deps if d.startswith("edgeasr.cli"))
           for n, deps in _graph().items() if not n.startswith("edgeasr.cli")}
    assert {n: d for n, d in bad.items() if d} == {}


def test_runtimes_import_nothing_but_the_runtime():
    """The device folder: numpy, onnxruntime, backend libraries, kaldi-native-fbank; never torch, scipy, onnx, and
    nothing of the toolchain's stages."""
    mods = _modules()
    problems = []
    for name, path in mods.items():
        if not name.startswith("edgeasr.runtimes"):
            continue
        for m in _imports(path):
            root = m.split(".")[0]
            if root in DEVICE_FORBIDDEN or (m.startswith("edgeasr.") and not m.startswith("edgeasr.runtimes")):
                problems.append(f"{name} imports {m}")
    assert problems == []


def test_every_module_is_under_the_edgeasr_namespace(tmp_path):
    """An app's own ``models.py`` next to it must not shadow anything: the wheel installs ``edgeasr`` only."""
    (tmp_path / "models.py").write_text("X = 1\n")
    (tmp_path / "runtimes.py").write_text("X = 1\n")
    code = "import edgeasr, edgeasr.models.conformer, edgeasr.runtimes.session, models; print(models.X)"
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "1", p.stderr[-1500:]
    top = (ROOT / "pyproject.toml").read_text()
    assert 'packages = ["edgeasr"' in top


BLOCKER = textwrap.dedent(f"""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {DEVICE_FORBIDDEN!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: device install)", name=name)
    sys.meta_path.insert(0, Block())
    from edgeasr.cli import main
    main()
""")


def _cli_without_torch(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", BLOCKER, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=kw.get("cwd", ROOT), timeout=300)


def test_every_command_starts_without_torch_scipy_onnx():
    p = _cli_without_torch("--help")
    assert p.returncode == 0, p.stderr[-1500:]
    commands = [line.split()[0] for line in p.stdout.split("Commands:")[1].strip().splitlines()]
    assert {"transcribe", "train", "export", "quantize", "parity", "eval", "data", "lm"} <= set(commands)
    for c in commands:
        p = _cli_without_torch(c, "--help")
        assert p.returncode == 0, (c, p.stderr[-1500:])


def test_missing_extra_is_one_line_naming_it(tmp_path):
    (tmp_path / "m.jsonl").write_text("")
    p = _cli_without_torch("train", "--mixer", "rwkv", "--train", tmp_path / "m.jsonl", "--dev", tmp_path / "m.jsonl",
                           "--out", tmp_path / "run")
    assert p.returncode == 2, p.stderr[-1500:]
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and "pip install 'edgeasr[train]'" in p.stderr
    p = _cli_without_torch("export", "default", "--kind", "step", "--out", tmp_path / "x.onnx")
    assert p.returncode == 2 and "pip install 'edgeasr[" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


@pytest.fixture(scope="module")
def step_graph(tmp_path_factory):
    import torch

    from edgeasr.exporters.onnx_export import export
    from edgeasr.models.config import EncoderConfig
    from edgeasr.models.conformer import Encoder
    from edgeasr.runtimes.features import FbankOptions
    from edgeasr.runtimes.vocab import BLANK_ID, VOCAB

    torch.manual_seed(0)
    m = Encoder(EncoderConfig(mixer="rwkv", mixer_options={"head_size": 16}, d_model=32, n_layers=2, conv_kernel=5,
                              dropout=0.0, direction="l2r")).eval()
    path = tmp_path_factory.mktemp("layout") / "step.onnx"
    export(m, {"features": FbankOptions().to_dict(), "vocab": list(VOCAB), "blank_id": BLANK_ID,
               "model": m.cfg.to_dict()}, path, "step", "l2r", 32, verify=False)
    return path


def test_device_commands_run_without_torch(step_graph, tmp_path):
    import numpy as np
    import soundfile as sf

    wav = tmp_path / "tone.wav"
    t = np.arange(12000) / 8000.0
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 8000)  # 8 kHz: the runtime resamples
    for args in (["transcribe", step_graph, wav, "--json"], ["transcribe", step_graph, wav, "--stream", "--json"],
                 ["inspect", step_graph, "--json"], ["backends"]):
        p = _cli_without_torch(*args)
        assert p.returncode == 0, (args, p.stderr[-1500:])
    p = _cli_without_torch("inspect", step_graph)
    assert "op histogram: needs the onnx package" in p.stdout
    manifest = tmp_path / "test.jsonl"  # eval of an exported file is a device command too
    manifest.write_text(json.dumps({"audio_filepath": str(wav), "text": "a tone", "duration": 1.5}) + "\n")
    p = _cli_without_torch("eval", step_graph, "--test", manifest, "--json")
    assert p.returncode == 0, p.stderr[-1500:]
    assert json.loads(p.stdout)[0]["utterances"] == 1
    # parity on the device: OpenVINO against the same graph on ONNX Runtime, no torch reference
    p = _cli_without_torch("parity", "--model", step_graph, "--reference", step_graph, "--test", manifest,
                           "--backends", "ort,openvino", "--no-peer", "--in-process", "--out", tmp_path / "parity")
    assert p.returncode == 0, p.stderr[-1500:]
    report = json.loads((tmp_path / "parity" / "report.json").read_text())
    assert report["reference"]["backend"] == "ort" and report["reference"]["how"].startswith("--reference")
    ran = {c["id"]: c for c in report["cells"] if c.get("status") in ("ok", "reference")}
    assert ran["step.onnx|ort|fp32|step|reference"]["status"] == "reference"
    for cid in ("step.onnx|ort|fp32|step", "step.onnx|openvino|fp32|step"):
        c = ran[cid]
        assert c["reference"] == "step.onnx|ort|fp32|step|reference" and c["metrics"]["err_max_abs"] < 1e-4
        assert c["metrics"]["wer_delta"] == 0
    p = _cli_without_torch("parity", "--model", step_graph, "--test", manifest, "--reference", "default",
                           "--out", tmp_path / "parity2")
    assert p.returncode == 2 and "--reference MODEL.onnx" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_one_progress_style():
    """Every progress bar is edgeasr.progress's (issue 35): no other module builds a rich Progress or a click bar."""
    others = {name: sorted(m for m in _imports(path) if m.startswith("rich.progress"))
              for name, path in _modules().items() if name != "edgeasr.progress"}
    assert {n: m for n, m in others.items() if m} == {}
    assert [n for n, path in _modules().items() if "progressbar(" in path.read_text()] == []


def test_every_option_of_every_command_has_help_text():
    """A user reads --help, not the source: every option says what it does (issue 35)."""
    import click

    from edgeasr.cli import main

    missing = [f"{name} {p.opts[0]}" for name, cmd in _commands(main) for p in cmd.params
               if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert missing == []


OLD_SPELLINGS = {"--limit", "--sweep-limit", "--time-limit", "--cap-s", "--mem-cap-mb", "--no-progress"}


def test_shared_options_agree_across_commands():
    """One vocabulary (issue 35): utterance limits are --max-utterances (an integer); threads are --threads, at
    least 1, defaulting to 1 everywhere but training (every core); time caps count minutes (--max-minutes,
    --stop-after-minutes, --max-minutes-per-cell); a written directory or file is --out; JSON on stdout is --json;
    old spellings are hidden."""
    import click

    from edgeasr.cli import main

    visible = {name: {o: p for p in cmd.params if isinstance(p, click.Option) and not p.hidden for o in p.opts}
               for name, cmd in _commands(main)}
    for name, opts in visible.items():
        assert not OLD_SPELLINGS & set(opts), name
        if "--max-utterances" in opts:
            assert isinstance(opts["--max-utterances"].type, click.types.IntParamType), name
        if "--threads" in opts:
            t = opts["--threads"]
            assert isinstance(t.type, click.IntRange) and t.type.min == 1, name
            assert name == "train" or t.default == 1, name
        for o, p in opts.items():
            if "minutes" in o:
                assert isinstance(p.type, click.types.FloatParamType) and "minutes" in p.help, (name, o)
            assert not o.endswith(("-s", "-sec", "-seconds")), (name, o)  # time in minutes, chunks in ms
        if "--out" in opts:
            assert isinstance(opts["--out"].type, click.Path) and opts["--out"].help.startswith("Output"), name
        if "--json" in opts:
            assert opts["--json"].is_flag and opts["--json"].help.startswith("Print"), name


def test_old_spellings_still_parse_with_a_notice(capsys):
    """Every hidden option is an old spelling that still parses for one release and says what replaces it."""
    import click

    from edgeasr.cli import main

    seen = set()
    for name, cmd in _commands(main):
        for p in cmd.params:
            if not (isinstance(p, click.Option) and p.hidden):
                continue
            old = p.opts[0]
            seen.add(old)
            try:  # parses only (the command does not run); a missing required option is fine
                cmd.make_context(name, [old] if p.is_flag else [old, "1"])
            except click.UsageError as e:
                assert old not in str(e), (name, e)
            assert f"notice: {old} is deprecated; " in capsys.readouterr().err, (name, old)
    assert seen == OLD_SPELLINGS


def _commands(group, path=()):
    """(command path, command) for every leaf command under ``group``."""
    import click

    for name, sub in group.commands.items():
        if isinstance(sub, click.Group):
            yield from _commands(sub, (*path, name))
        else:
            yield " ".join((*path, name)), sub


FLAG_TABLE = ("<!-- flag tables: generated from the CLI; tests/test_layout.py checks them "
              "(EDGEASR_WRITE_DOCS=1 pytest tests/test_layout.py -k flag_table rewrites them) -->",
              "<!-- end of flag tables -->")


def _default(p) -> str:
    """An option's default as the flag table shows it."""
    if p.required:
        return "required"
    if p.is_flag and not p.secondary_opts:
        return "off"
    if p.is_flag:  # --x/--no-x: the spelling that is on by default, or none (decided at run time)
        return {True: f"`{p.opts[0]}`", False: f"`{p.secondary_opts[0]}`"}.get(p.default, "-")
    if p.default in (None, "", ()) or p.multiple or type(p.default).__name__ == "Sentinel":
        return "-"
    return f"`{p.default}`"


def _flag_tables() -> str:
    """Markdown: one table per command (option, default, what it does), then the old spellings still accepted."""
    import click

    from edgeasr.cli import main

    def cell(text) -> str:  # one line, and nothing Markdown would take for a column, a tag or emphasis
        text = " ".join(str(text).split())
        return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")

    out, old = [], []
    for name, cmd in _commands(main):
        rows = []
        for p in cmd.params:
            if not isinstance(p, click.Option):
                continue
            if p.hidden:
                old.append(f"| `{name}` | `{p.opts[0]}` | {cell(p.help.removeprefix('Deprecated: '))} |")
            else:
                rows.append(f"| `{'/'.join(p.opts + p.secondary_opts)}` | {_default(p)} | {cell(p.help)} |")
        out += [f"### edgeasr {name}", "", "| option | default | what it does |", "|---|---|---|", *rows, ""]
    out += ["### Old spellings", "", "Accepted until the next release, with a notice on stderr.", "",
            "| command | old spelling | instead |", "|---|---|---|", *old]
    return "\n".join(out)


def test_docs_flag_table_matches_the_cli():
    """docs/cli.md's flag tables are the CLI's own options, defaults and help: they cannot drift (issue 35)."""
    doc = ROOT / "docs" / "cli.md"
    text = doc.read_text()
    begin, end = FLAG_TABLE
    assert begin in text and end in text, f"{doc} lacks the flag-table markers"
    head, rest = text.split(begin)
    current, tail = rest.split(end)
    want = f"\n{_flag_tables()}\n"
    if os.environ.get("EDGEASR_WRITE_DOCS") == "1":
        doc.write_text(head + begin + want + end + tail)
        return
    assert current == want, "docs/cli.md's flag tables are stale: EDGEASR_WRITE_DOCS=1 pytest tests/test_layout.py -k flag_table"
