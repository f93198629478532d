"""``edgeasr pretrained``: the models shipped inside the package and their measured WER."""
from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Column, Table

from edgeasr import pretrained


@click.command(name="pretrained")
@click.option("--json", "as_json", is_flag=True, help="Print the models and their cards as JSON.")
def list_pretrained(as_json):
    """Models shipped with edgeasr and their measured WER."""
    rows = []
    for name, path in pretrained.shipped().items():
        c = pretrained.card(path)
        rows.append({"name": name, "default": name == pretrained.DEFAULT, "path": str(path), **c})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    # in a narrow terminal only the WER cells wrap: names (three share "rwkv-dirdrop") must never be cut
    fixed = [Column(h, no_wrap=True) for h in ("name", "mixer", "params", "MB")]
    t = Table(*fixed, "held-out WER % l2r / alt / bi", "streaming, 640 ms behind", "real WER % l2r / alt / bi",
              caption="WER %: greedy CTC on 340 utterances of 6 held-out TTS voices and on 12 real recordings; "
                      "640 ms behind the audio: chunk-bi 320 ms chunks + 320 ms look-ahead (or 640 ms chunks), or "
                      "strict 640 ms chunks (every chunk alone), held-out / real")
    for r in rows:
        w = r.get("wer", {})
        test, real = w.get("test", {}), w.get("real", {})
        held = " / ".join(f"{test[d]:.1f}" if d in test else "-" for d in ("l2r", "alt", "bi"))
        chunked = next((m for m in (pretrained.STREAMING_MODE, "chunk-bi:640ms", "strict:640ms") if m in test), None)
        t.add_row(r["name"] + ("\n(default)" if r["default"] else ""), str(r.get("mixer", "")),
                  f"{r.get('parameters', 0) / 1e6:.2f} M", f"{r.get('size_mb', 0):.1f}", held,
                  "-" if chunked is None else f"{chunked}: {test[chunked]:.1f} / "
                                              f"{real[chunked]:.1f}" if chunked in real else f"{test[chunked]:.1f}",
                  " / ".join(f"{real[d]:.1f}" for d in ("l2r", "alt", "bi") if d in real) or "-")
    Console().print(t)


COMMANDS = [list_pretrained]
