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
    t = Table(*fixed, "held-out WER % l2r / alt / bi", "chunk-bi 640 ms", "real WER % l2r / alt / bi",
              caption="WER %: greedy CTC on 340 utterances of 6 held-out TTS voices and on 12 real recordings")
    for r in rows:
        w = r.get("wer", {})
        held = " / ".join(f"{w.get('test', {}).get(d, float('nan')):.1f}" if d in w.get("test", {}) else "-"
                          for d in ("l2r", "alt", "bi"))
        real = w.get("real", {})
        stream = w.get("test", {}).get("chunk-bi:640ms")
        t.add_row(r["name"] + ("\n(default)" if r["default"] else ""), str(r.get("mixer", "")),
                  f"{r.get('parameters', 0) / 1e6:.2f} M", f"{r.get('size_mb', 0):.1f}", held,
                  "-" if stream is None else f"{stream:.1f}",
                  " / ".join(f"{real[d]:.1f}" for d in ("l2r", "alt", "bi") if d in real) or "-")
    Console().print(t)


COMMANDS = [list_pretrained]
