#!/usr/bin/env python3
"""Impasto for GIMP 3: Filters > Neural Style... and Filters > Upscale x4....

A thin plug-in: it reads and writes pixels and asks Impasto's core (a local server, started on
demand with the Python that install.py recorded in impasto-core.json) to do the work.
"""

import json
import sys
from pathlib import Path

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GimpUi, GLib, GObject  # noqa: E402

STYLIZE = "plug-in-impasto-stylize"
UPSCALE = "plug-in-impasto-upscale"
CORE_FILE = Path(__file__).resolve().with_name("impasto-core.json")  # written by install.py
REINSTALL = "run 'python3 install.py' in the Impasto folder, then restart GIMP"

# babl formats by (grayscale, has alpha): 8 bits per channel, gamma-encoded, as the core expects.
FORMATS = {
    (False, False): ("R'G'B' u8", 3),
    (False, True): ("R'G'B'A u8", 4),
    (True, False): ("Y' u8", 1),
    (True, True): ("Y'A u8", 2),
}


class PluginError(Exception):
    """Something the user must be told, in a GIMP message, with what to do."""


# ---- the core --------------------------------------------------------------------------------


def connect():
    """A client of Impasto's core, found through impasto-core.json (the server starts on demand)."""
    try:
        setup = json.loads(CORE_FILE.read_text(encoding="utf-8"))
        repo, python = setup["repo"], setup["python"]
    except (OSError, ValueError, KeyError):
        raise PluginError(
            f"Impasto's core is not set up ({CORE_FILE} is missing): {REINSTALL}."
        ) from None
    if not (Path(repo) / "core" / "client.py").is_file():
        raise PluginError(
            f"Impasto's core is not found in {repo} (moved or deleted?): {REINSTALL}."
        )
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from core import client  # standard library only: safe in GIMP's Python

    # A generous timeout: the first job after a while waits for the server to load torch.
    return client.Client(python=python, repo=repo, timeout=120)


def pick_model(models: list, wanted: str, what: str) -> dict:
    """The model called ``wanted`` (or the first one when empty), with an actionable error."""
    if not models:
        raise PluginError(f"No {what} is installed: train one or reinstall Impasto ({REINSTALL}).")
    if not wanted:
        return models[0]
    for model in models:
        if model["name"] == wanted:
            return model
    known = ", ".join(m["name"] for m in models)
    raise PluginError(f"Unknown {what} '{wanted}'. Installed: {known}.")


def label(model: dict) -> str:
    return model.get("display_name") or model["name"]


def job_progress(title: str) -> dict:
    """Progress callbacks for a client job: GIMP's progress bar, and a note while it waits its turn."""
    Gimp.progress_init(title)
    waiting = False

    def queued(ahead: int) -> None:
        nonlocal waiting
        waiting = True
        Gimp.progress_set_text(f"{title}: waiting for {ahead} other job(s) to finish")

    def progress(fraction: float) -> None:
        nonlocal waiting
        if waiting:
            waiting = False
            Gimp.progress_set_text(title)
        Gimp.progress_update(fraction)

    return {"progress": progress, "queued": queued}


# ---- pixels ----------------------------------------------------------------------------------


def pixel_format(drawable) -> tuple:
    """The babl format and channel count to exchange this drawable's pixels with the core."""
    if drawable.is_indexed():
        raise PluginError("Indexed images are not supported: use Image > Mode > RGB first.")
    return FORMATS[(drawable.is_gray(), drawable.has_alpha())]


def read_pixels(drawable, x: int, y: int, width: int, height: int, fmt: str) -> bytes:
    rect = Gegl.Rectangle.new(x, y, width, height)
    return bytes(drawable.get_buffer().get(rect, 1.0, fmt, Gegl.AbyssPolicy.CLAMP))


def write_pixels(drawable, x: int, y: int, width: int, height: int, fmt: str, data: bytes) -> None:
    """Write through the shadow buffer: GIMP blends it with the selection mask and records undo."""
    shadow = drawable.get_shadow_buffer()
    shadow.set(Gegl.Rectangle.new(x, y, width, height), fmt, data)
    shadow.flush()
    drawable.merge_shadow(True)
    drawable.update(x, y, width, height)


def checked_layer(image, drawables: list):
    """The one layer to work on, or a PluginError saying how to choose it."""
    if image.get_base_type() == Gimp.ImageBaseType.INDEXED:
        raise PluginError("Indexed images are not supported: use Image > Mode > RGB first.")
    if len(drawables) != 1:
        raise PluginError("Select exactly one layer in the Layers dialog, then run Impasto again.")
    drawable = drawables[0]
    if not isinstance(drawable, Gimp.Layer):
        raise PluginError("Select a layer (not a layer mask or channel) in the Layers dialog.")
    if drawable.get_lock_content():
        raise PluginError("The layer's pixels are locked: unlock them in the Layers dialog.")
    if drawable.is_group():
        raise PluginError(
            "This is a layer group: select a normal layer inside it (or merge the group)."
        )
    return drawable


# ---- procedures ------------------------------------------------------------------------------


def stylize(image, drawable, client, config) -> None:
    """Paint the layer (within the selection) in the chosen style, as a new layer or in place."""
    style = pick_model(client.models("style"), config.get_property("model"), "style")
    inside, x, y, width, height = drawable.mask_intersect()
    if not inside:
        raise PluginError(
            "The selection does not touch this layer: change it or use Select > None."
        )
    fmt, channels = pixel_format(drawable)
    pixels = read_pixels(drawable, x, y, width, height, fmt)
    result = client.stylize(
        pixels,
        width,
        height,
        channels,
        style["name"],
        strength=config.get_property("strength"),
        preserve_colors=config.get_property("preserve-colors"),
        scale=config.get_property("style-scale"),
        **job_progress(f"Neural style: {label(style)}"),
    )
    image.undo_group_start()
    try:
        target = drawable
        if config.get_property("output") == "new-layer":
            target = drawable.copy()  # outside the selection the new layer keeps the original
            target.set_name(f"{drawable.get_name()} ({label(style)})")
            image.insert_layer(target, drawable.get_parent(), image.get_item_position(drawable))
        write_pixels(target, x, y, width, height, fmt, result)
    finally:
        image.undo_group_end()
    Gimp.progress_end()


def upscale(image, drawable, client, config, interactive: bool):
    """Upscale the layer x4 with a super-resolution model, into a new image or in place."""
    model = pick_model(client.models("sr"), config.get_property("model"), "upscaling model")
    fmt, channels = pixel_format(drawable)
    width, height = drawable.get_width(), drawable.get_height()
    pixels = read_pixels(drawable, 0, 0, width, height, fmt)
    result, new_width, new_height = client.upscale(
        pixels,
        width,
        height,
        channels,
        model["name"],
        **job_progress(f"Upscale x4: {label(model)}"),
    )
    if config.get_property("output") == "new-image":
        target_image = Gimp.Image.new(new_width, new_height, image.get_base_type())
        layer = Gimp.Layer.new(
            target_image,
            drawable.get_name(),
            new_width,
            new_height,
            drawable.type(),
            100.0,
            Gimp.LayerMode.NORMAL,
        )
        target_image.insert_layer(layer, None, 0)
        write_pixels(layer, 0, 0, new_width, new_height, fmt, result)
        if interactive:
            try:
                Gimp.Display.new(target_image)
            except TypeError:  # gimp-console has no displays; the image is still returned
                pass
    else:
        target_image = image
        image.undo_group_start()
        try:
            # Other layers are resized by GIMP; the chosen one gets the model's pixels, unmasked.
            saved = Gimp.Selection.save(image)
            Gimp.Selection.none(image)
            image.scale(image.get_width() * 4, image.get_height() * 4)
            write_pixels(drawable, 0, 0, new_width, new_height, fmt, result)
            image.select_item(Gimp.ChannelOps.REPLACE, saved)
            image.remove_channel(saved)
        finally:
            image.undo_group_end()
    Gimp.progress_end()
    return target_image


# ---- dialogs ---------------------------------------------------------------------------------


def model_dialog(procedure, config, models: list, title: str, properties: list) -> bool:
    """The procedure's dialog with a list of the installed models on top; False if cancelled."""
    gi.require_version("Gtk", "3.0")
    from gi.repository import Gtk

    GimpUi.init(procedure.get_name())
    dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config, title=title)
    combo = Gtk.ComboBoxText()
    for model in models:
        combo.append(model["name"], label(model))
    if not combo.set_active_id(config.get_property("model") or ""):
        combo.set_active(0)

    def chosen(_combo) -> None:
        model = models[combo.get_active()]
        config.set_property("model", model["name"])
        tip = "\n".join(t for t in (model.get("description"), model.get("credit")) if t)
        combo.set_tooltip_text(tip or None)

    combo.connect("changed", chosen)
    chosen(combo)
    row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=12)
    row.pack_start(Gtk.Label(label="Model"), False, False, 0)
    row.pack_start(combo, True, True, 0)
    dialog.fill(properties)
    content = dialog.get_content_area()
    content.pack_start(row, False, False, 6)
    content.reorder_child(row, 0)
    row.show_all()
    accepted = dialog.run()
    dialog.destroy()
    return accepted


def run_stylize(procedure, run_mode, image, drawables, config, data):
    def work(client, drawable):
        if run_mode == Gimp.RunMode.INTERACTIVE:
            models = client.models("style")
            pick_model(models, "", "style")
            properties = ["strength", "preserve-colors", "style-scale", "output"]
            if not model_dialog(procedure, config, models, "Neural Style", properties):
                return None
        stylize(image, drawable, client, config)
        Gimp.displays_flush()
        return True

    return guarded(procedure, image, drawables, work)


def run_upscale(procedure, run_mode, image, drawables, config, data):
    interactive = run_mode == Gimp.RunMode.INTERACTIVE

    def work(client, drawable):
        if interactive:
            models = client.models("sr")
            pick_model(models, "", "upscaling model")
            if not model_dialog(procedure, config, models, "Upscale x4", ["output"]):
                return None
        result = upscale(image, drawable, client, config, interactive)
        Gimp.displays_flush()
        return result

    return guarded(procedure, image, drawables, work, returns_image=True)


def guarded(procedure, image, drawables, work, returns_image: bool = False):
    """Run ``work`` and turn every failure into a GIMP error message the user can act on."""
    try:
        drawable = checked_layer(image, drawables)
        client = connect()
        Gimp.progress_init("Impasto: connecting to the core (its first start takes a while)")
        from core.client import Cancelled, ImpastoError

        try:
            result = work(client, drawable)
        except Cancelled:
            result = None
        except ImpastoError as e:
            raise PluginError(str(e)) from None
    except PluginError as e:
        return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(str(e)))
    except Exception as e:  # a bug: still tell the user, never only a log
        message = f"Impasto failed unexpectedly ({type(e).__name__}: {e}). Please report it."
        return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(message))
    if result is None:
        return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
    values = procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
    if returns_image:
        values.remove(1)
        values.insert(1, GObject.Value(Gimp.Image, result))
    return values


# ---- registration ----------------------------------------------------------------------------


def choice(*options: tuple) -> "Gimp.Choice":
    made = Gimp.Choice.new()
    for number, (nick, label) in enumerate(options):
        made.add(nick, number, label, "")
    return made


class Impasto(Gimp.PlugIn):
    def do_set_i18n(self, name):
        return False

    def do_query_procedures(self):
        return [STYLIZE, UPSCALE]

    def do_create_procedure(self, name):
        run = run_stylize if name == STYLIZE else run_upscale
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_attribution("Impasto contributors", "Impasto contributors", "2026")
        # Free text, not a fixed choice: a style trained after GIMP started is usable at once.
        rw = GObject.ParamFlags.READWRITE
        if name == STYLIZE:
            procedure.set_menu_label("Neural _Style...")
            procedure.set_documentation(
                "Paint the layer in the style of an artwork (fast neural style transfer)",
                "Stylizes the active layer, or only the selection (feathering blends), keeping its "
                "alpha. 'model' is an installed style's name, empty for the first one.",
                name,
            )
            procedure.add_menu_path("<Image>/Filters")
            procedure.add_string_argument("model", "_Style", "Style name", "", rw)
            procedure.add_double_argument(
                "strength", "S_trength", "Blend with the original (0-1)", 0.0, 1.0, 1.0, rw
            )
            procedure.add_boolean_argument(
                "preserve-colors", "_Preserve colors", "Keep the original colors", False, rw
            )
            procedure.add_double_argument(
                "style-scale",
                "Style _scale",
                "Processing scale: 0.5 gives strokes twice as large, 2 finer ones",
                0.25,
                4.0,
                1.0,
                rw,
            )
            output = choice(("new-layer", "New layer"), ("in-place", "In place"))
            procedure.add_choice_argument("output", "O_utput", "Output", output, "new-layer", rw)
        else:
            procedure.set_menu_label("_Upscale x4...")
            procedure.set_documentation(
                "Upscale the layer 4 times with a neural network (super-resolution)",
                "Upscales the active layer x4 into a new image, or the whole image in place (other "
                "layers resized by GIMP). 'model' is an upscaler's name (e.g. sr-faithful, "
                "sr-sharp), empty for the first one.",
                name,
            )
            procedure.add_menu_path("<Image>/Filters")
            procedure.add_string_argument("model", "_Model", "Upscaling model name", "", rw)
            output = choice(("new-image", "New image"), ("in-place", "Resize this image"))
            procedure.add_choice_argument("output", "O_utput", "Output", output, "new-image", rw)
            procedure.add_image_return_value("new-image", "Image", "The upscaled image", True, rw)
        return procedure


Gimp.main(Impasto.__gtype__, sys.argv)
