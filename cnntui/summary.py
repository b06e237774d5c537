"""``cnntui summary``: each architecture as a torchinfo-like table of layers, output shapes,
parameters and multiply-adds."""

from __future__ import annotations

import json
import math
import sys

from rich.table import Table

from cnntui import layers, model
from cnntui.terminal import Console


def layer_macs(layer: layers.Layer, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass for one image: conv and linear layers only (biases,
    ReLU and pooling are not counted)."""
    if isinstance(layer, layers.Conv):
        return math.prod(out_shape) * in_shape[0] // layer.groups * layer.kernel ** 2
    if isinstance(layer, layers.Linear):
        return in_shape[0] * layer.features
    return 0


def summarize(arch: model.Architecture) -> dict:
    rows = []
    for i, layer in enumerate(arch.layers):
        in_shape = arch.shapes[model.layer_input(arch, i)]
        out_shape = arch.shapes[layer.out]
        rows.append({"name": layer.name, "kind": layer.kind, "output": layer.out,
                     "output_shape": list(out_shape),
                     "params": sum(math.prod(s.shape)
                                   for s in layer.param_specs(in_shape).values()),
                     "macs": layer_macs(layer, in_shape, out_shape)})
    return {"arch": arch.key, "name": arch.name, "input_shape": list(arch.input_shape),
            "params": sum(r["params"] for r in rows), "macs": sum(r["macs"] for r in rows),
            "layers": rows}


def table(doc: dict) -> Table:
    t = Table(title=f"{doc['name']} (--arch {doc['arch']}), input {tuple(doc['input_shape'])}")
    for col in ("layer", "kind", "output", "shape", "params", "MACs"):
        t.add_column(col, justify="right" if col in ("params", "MACs") else "left")
    for r in doc["layers"]:
        t.add_row(r["name"], r["kind"], r["output"], "x".join(map(str, r["output_shape"])),
                  f"{r['params']:,}", f"{r['macs']:,}")
    t.add_section()
    t.add_row("total", "", "", "", f"{doc['params']:,}", f"{doc['macs']:,}")
    return t


def main(arch: str | None = None, as_json: bool = False) -> int:
    """``cnntui summary``: ``arch`` (a key of ARCHITECTURES) or all of them."""
    archs = [model.ARCHITECTURES[arch]] if arch else list(model.ARCHITECTURES.values())
    docs = [summarize(a) for a in archs]
    if as_json:
        json.dump(docs, sys.stdout)
        sys.stdout.write("\n")
        return 0
    console = Console()
    for doc in docs:
        console.print(table(doc))
    return 0
