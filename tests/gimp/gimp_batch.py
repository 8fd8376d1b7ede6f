"""What the batch scripts of the newer GIMP e2e tests share: run inside GIMP (python-fu-eval)."""

from __future__ import annotations

from pathlib import Path

# Helpers to make an image from raw bytes in OUT, call a procedure as a script would, dump pixels.
PRELUDE = r"""
import json, time
from pathlib import Path
import gi
gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio

OUT = Path(__OUT__)
pdb = Gimp.get_pdb()
results = {}

def rect(d):
    return Gegl.Rectangle.new(0, 0, d.get_width(), d.get_height())

def new_image(raw, w, h, image=None, name="photo"):
    image = image or Gimp.Image.new(w, h, Gimp.ImageBaseType.RGB)
    layer = Gimp.Layer.new(image, name, w, h, Gimp.ImageType.RGBA_IMAGE, 100.0,
                           Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    buffer = layer.get_buffer()
    buffer.set(rect(layer), "R'G'B'A u8", (OUT / raw).read_bytes())
    buffer.flush()
    return image, layer

def call(name, image, layer, **args):
    proc = pdb.lookup_procedure(name)
    config = proc.create_config()
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    for key, value in args.items():
        config.set_property(key, value)
    values = proc.run(config)
    status = values.index(0)
    error = values.index(1) if status != Gimp.PDBStatusType.SUCCESS and values.length() > 1 else ""
    return values, {"status": status.value_nick, "error": error or ""}

def dump(layer, name):
    data = layer.get_buffer().get(rect(layer), 1.0, "R'G'B'A u8", Gegl.AbyssPolicy.CLAMP)
    (OUT / f"{name}.raw").write_bytes(bytes(data))
"""


def script(body: str, out: Path, **values: object) -> str:
    """The prelude and ``body``, with __OUT__ and each __KEY__ of ``values`` filled in."""
    text = PRELUDE + body + '\n(OUT / "results.json").write_text(json.dumps(results))\n'
    for key, value in {"OUT": str(out), **values}.items():
        text = text.replace(f"__{key}__", repr(value))
    return text
