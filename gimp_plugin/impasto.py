#!/usr/bin/env python3
"""Impasto for GIMP 3: Filters > Neural Style..., Upscale x4... and New Style from Layer....

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
from gi.repository import Gegl, Gimp, GimpUi, Gio, GLib, GObject  # noqa: E402

STYLIZE = "plug-in-impasto-stylize"
UPSCALE = "plug-in-impasto-upscale"
TRAIN = "plug-in-impasto-train"  # impasto_train.py
CORE_FILE = Path(__file__).resolve().with_name("impasto-core.json")  # written by install.py
HELP_DIR = Path(__file__).resolve().with_name("help")  # help/en/gimp-help.xml: GIMP's Help buttons
REINSTALL = "run 'python3 install.py' in the Impasto folder, then restart GIMP"

# What each procedure accepts; the dialog offers exactly these, and scripts are checked against
# them (an argument's GIMP range is wider on purpose, see add_arguments).
STRENGTH = (0.0, 1.0)
STYLE_SCALE = (0.25, 4.0)
OUTPUTS = {
    STYLIZE: (("new-layer", "New layer"), ("in-place", "In place")),
    UPSCALE: (("new-image", "New image"), ("in-place", "Resize this image")),
}
SOURCES = (("layer", "Active layer"), ("visible", "Visible image"))  # what Upscale x4 reads

# babl components by (grayscale, has alpha), always gamma-encoded: the networks' domain. GIMP
# converts a linear image's pixels both ways (in float that loses nothing).
COMPONENTS = {(False, False): ("R'G'B'", 3), (False, True): ("R'G'B'A", 4)}
COMPONENTS |= {(True, False): ("Y'", 1), (True, True): ("Y'A", 2)}
# The image's precision (its nick's first word) -> babl type and the core's sample type: each
# image exchanges pixels at its own depth (u32 and double fit the core's u16 and f32).
SAMPLES = {"u8": ("u8", "u8"), "u16": ("u16", "u16"), "u32": ("u16", "u16")}
SAMPLES |= {"half": ("float", "f32"), "float": ("float", "f32"), "double": ("float", "f32")}


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
    from core import client, flatpak  # standard library only: safe in GIMP's Python

    # A generous timeout: the first job after a while waits for the server to load torch.
    if flatpak.inside():  # Flathub's GIMP: the server runs outside the sandbox
        return flatpak.client(setup, timeout=120)
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


def job_progress(title: str, verb: str, model: str) -> dict:
    """Callbacks for a client job that show its phases in GIMP's progress bar: text for each, the
    fraction of tiles done, and a pulsing bar while a phase has no measurable fraction."""
    texts = {
        "": f"{title}: starting",
        "loading": f"{title}: preparing {model} (its first use takes a few seconds)",
        "statistics": f"{title}: measuring the whole image",
        "tiles": f"{title}: {verb}",
    }
    shown = None

    def show(text: str) -> None:
        nonlocal shown
        if text != shown:
            shown = text
            Gimp.progress_set_text(text)

    def queued(ahead: int) -> None:
        show(f"{title}: waiting for {ahead} other job(s) to finish" if ahead else texts[""])
        Gimp.progress_pulse()

    def phase(name: str) -> None:
        show(texts.get(name, texts[""]))
        if name != "tiles":
            Gimp.progress_pulse()

    return {"progress": Gimp.progress_update, "queued": queued, "phase": phase}


# ---- pixels ----------------------------------------------------------------------------------


def pixel_format(drawable) -> tuple:
    """(babl format, channels, core sample type) to exchange this drawable's pixels with the core
    at the image's own precision."""
    if drawable.is_indexed():
        raise PluginError("Indexed images are not supported: use Image > Mode > RGB first.")
    components, channels = COMPONENTS[(drawable.is_gray(), drawable.has_alpha())]
    babl_type, dtype = SAMPLES[drawable.get_image().get_precision().value_nick.split("-")[0]]
    return f"{components} {babl_type}", channels, dtype


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


def fill_new_layer(layer, fmt: str, data: bytes) -> None:
    """Write a new layer's pixels directly: it has no undo and no selection to blend with, and a
    shadow buffer would hold a second copy of a big upscale."""
    buffer = layer.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, layer.get_width(), layer.get_height()), fmt, data)
    buffer.flush()
    layer.update(0, 0, layer.get_width(), layer.get_height())


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
    fmt, channels, dtype = pixel_format(drawable)
    title = f"Neural style: {label(style)}"
    Gimp.progress_init(f"{title}: reading the layer")
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
        dtype=dtype,
        **job_progress(title, "painting", label(style)),
    )
    Gimp.progress_set_text(f"{title}: writing the result into the layer")
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


def upscale_source(image, drawable, config):
    """(layer to read, x, y, width, height, scratch image or None): the active layer or a merged
    copy of the visible image, within the selection's bounds for a new image."""
    scratch = None
    layer = drawable
    if config.get_property("source") == "visible":
        scratch = image.duplicate()  # GEGL shares the tiles: a copy costs little until merged
        layer = scratch.merge_visible_layers(Gimp.MergeType.CLIP_TO_IMAGE)
    if config.get_property("output") == "in-place":  # the whole image is scaled
        return layer, 0, 0, layer.get_width(), layer.get_height(), scratch
    inside, x, y, width, height = layer.mask_intersect()  # the whole layer without a selection
    if not inside:
        if scratch is not None:
            scratch.delete()
        raise PluginError(
            "The selection does not touch this layer: change it or use Select > None."
        )
    return layer, x, y, width, height, scratch


def x4_file(image, drawable):
    """(name, file) of the new image: "photo x4" beside photo.jpg; for an image never saved, after
    the layer, in the home folder (where File > Save then proposes it)."""
    file = image.get_file()
    stem = Path(file.get_basename()).stem if file is not None else drawable.get_name()
    folder = Path(file.get_path()).parent if file is not None and file.get_path() else Path.home()
    name = f"{stem} x4"
    return name, Gio.File.new_for_path(str(folder / f"{name}.xcf"))


def upscale(image, drawable, client, config, interactive: bool):
    """Upscale the layer (or the visible image; within the selection's bounds) x4 with a
    super-resolution model, into a new image named "<name> x4", or the whole image in place."""
    model = pick_model(client.models("sr"), config.get_property("model"), "upscaling model")
    title = label(model)
    Gimp.progress_init(f"{title}: reading the layer")
    source, x, y, width, height, scratch = upscale_source(image, drawable, config)
    fmt, channels, dtype = pixel_format(source)
    kind = source.type()
    pixels = read_pixels(source, x, y, width, height, fmt)
    if scratch is not None:
        scratch.delete()
    result, new_width, new_height = client.upscale(
        pixels,
        width,
        height,
        channels,
        model["name"],
        dtype=dtype,
        **job_progress(title, "upscaling", title),
    )
    del pixels  # GIMP's memory is for the result now
    Gimp.progress_set_text(f"{title}: writing the result")
    if config.get_property("output") == "new-image":
        target_image = Gimp.Image.new_with_precision(
            new_width, new_height, image.get_base_type(), image.get_precision()
        )
        name, file = x4_file(image, drawable)
        target_image.set_file(file)
        layer = Gimp.Layer.new(
            target_image, name, new_width, new_height, kind, 100.0, Gimp.LayerMode.NORMAL
        )
        target_image.insert_layer(layer, None, 0)
        fill_new_layer(layer, fmt, result)
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


# ---- checks ----------------------------------------------------------------------------------


def check_arguments(name: str, config) -> None:
    """Refuse values a script set outside what the procedure takes, naming the argument (GIMP
    itself would only print a warning and run with the default)."""
    output = config.get_property("output")
    allowed = [nick for nick, _ in OUTPUTS[name]]
    if output not in allowed:
        raise PluginError(f"output must be {' or '.join(map(repr, allowed))}, not {output!r}.")
    if name != STYLIZE:
        source = config.get_property("source")
        if source not in [nick for nick, _ in SOURCES]:
            raise PluginError(f"source must be 'layer' or 'visible', not {source!r}.")
        if source == "visible" and output == "in-place":
            raise PluginError("source 'visible' makes a new image: set output to 'new-image'.")
        return
    for argument, (low, high) in (("strength", STRENGTH), ("style-scale", STYLE_SCALE)):
        value = config.get_property(argument)
        if not low <= value <= high:  # also refuses NaN
            raise PluginError(f"{argument} must be between {low:g} and {high:g}, not {value:g}.")


# ---- dialogs ---------------------------------------------------------------------------------


def bound_combo(config, prop: str, options: list) -> "GimpUi.StringComboBox":
    """A combo of (id, label) options bound to ``config``'s string ``prop`` both ways by GIMP's own
    property widget: choosing sets the config, and Reset / Load Saved Settings update the combo."""
    gi.require_version("Gtk", "3.0")
    from gi.repository import Gtk

    store = Gtk.ListStore(str, str)
    for option in options:
        store.append(list(option))
    return GimpUi.prop_string_combo_box_new(config, prop, store, 0, 1)


def tooltip(model: dict) -> str | None:
    """The model's description, and its credit unless the description already gives it."""
    description, credit = model.get("description", ""), model.get("credit", "")
    lines = [description] + ([credit] if credit and credit not in description else [])
    return "\n".join(line for line in lines if line) or None


def where_it_runs(health: dict) -> str:
    """ "CPU, int8" or "NVIDIA H200, fp16", from the server's health answer."""
    device = health.get("device_name") or health.get("device", "?").upper()
    return f"Runs on {device}, {health.get('precision', '?')}"


def build_dialog(name: str, procedure, config, models: list, health: dict, title: str):
    """The dialog of procedure ``name`` (STYLIZE or UPSCALE), not yet run: models, options, where
    it runs. Returns (dialog, model combo, output combo)."""
    gi.require_version("Gtk", "3.0")
    from gi.repository import Gtk

    GimpUi.init(name)
    dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config, title=title)
    by_name = {m["name"]: m for m in models}
    model_combo = bound_combo(config, "model", [(m["name"], label(m)) for m in models])

    def model_changed(*_) -> None:
        # Empty (the factory default) or no longer installed: the first model, which is what runs.
        chosen = by_name.get(config.get_property("model"))
        if chosen is None:
            config.set_property("model", models[0]["name"])
            return
        model_combo.set_tooltip_text(tooltip(chosen))

    config.connect("notify::model", model_changed)
    model_changed()
    if config.get_property("output") not in [nick for nick, _ in OUTPUTS[name]]:
        config.set_property("output", OUTPUTS[name][0][0])  # e.g. remembered from a script's call
    output_combo = bound_combo(config, "output", list(OUTPUTS[name]))

    properties = ["runs-on"]
    dialog.get_label("runs-on", where_it_runs(health), False, False)
    if name == STYLIZE:
        for prop, (low, high) in (("strength", STRENGTH), ("style-scale", STYLE_SCALE)):
            scale = dialog.get_spin_scale(prop, 1.0)
            scale.set_range(low, high)  # the argument's own range is wider (see add_arguments)
            scale.set_increments(0.01, 0.1)
            scale.set_digits(2)
        dialog.get_label("style-scale-help", "Brush size: smaller = bigger strokes", False, False)
        properties = ["strength", "preserve-colors", "style-scale", "style-scale-help", "runs-on"]
    dialog.fill(properties)
    content = dialog.get_content_area()
    rows = [("Model", model_combo), ("Output", output_combo)]
    if name == UPSCALE:
        rows.insert(1, ("Source", bound_combo(config, "source", list(SOURCES))))
    for position, (text, combo) in enumerate(rows):
        row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=12)
        row.pack_start(Gtk.Label(label=text), False, False, 0)
        row.pack_start(combo, True, True, 0)
        content.pack_start(row, False, False, 6)
        content.reorder_child(row, 0 if position == 0 else -1)
        row.show_all()
    return dialog, model_combo, output_combo


def add_preview(dialog, client, drawable, config, models: list):
    """Neural Style's live preview, on top of the dialog; None without pixels to show."""
    from impasto_preview import Preview  # next to this file

    inside, *box = drawable.mask_intersect()
    if not inside:
        return None  # OK says why
    names = {m["name"]: label(m) for m in models}
    preview = Preview(client, drawable, tuple(box), pixel_format(drawable), config, names)
    content = dialog.get_content_area()
    content.pack_start(preview.widget, False, False, 6)
    content.reorder_child(preview.widget, 0)
    preview.widget.show_all()
    return preview


def keep_warm(client, config, kind: str) -> None:
    """Have the server load the chosen model now and whenever another is chosen, while the user
    is still in the dialog, so OK does not wait for it."""
    from core.client import ImpastoError

    def warm(*_) -> None:
        try:
            client.warm(config.get_property("model"), kind)
        except ImpastoError:
            pass  # OK runs the job, which says what is wrong

    config.connect("notify::model", warm)
    warm()


def run_dialog(procedure, config, client, title: str, drawable) -> bool:
    """Show the procedure's dialog with the server's models; False if cancelled."""
    name = procedure.get_name()
    kind, what = ("style", "style") if name == STYLIZE else ("sr", "upscaling model")
    models = client.models(kind)
    pick_model(models, "", what)
    health = client.health()
    Gimp.progress_end()  # the core is up: no "starting the core" under the dialog
    dialog = build_dialog(name, procedure, config, models, health, title)[0]
    keep_warm(client, config, kind)
    if name == STYLIZE:
        add_preview(dialog, client, drawable, config, models)
    accepted = dialog.run()
    dialog.destroy()
    return accepted


def run_stylize(procedure, run_mode, image, drawables, config, data):
    def work(client, drawable):
        if run_mode == Gimp.RunMode.INTERACTIVE:
            if not run_dialog(procedure, config, client, "Neural Style", drawable):
                return None
        check_arguments(STYLIZE, config)
        stylize(image, drawable, client, config)
        Gimp.displays_flush()
        return True

    return guarded(procedure, image, drawables, work)


def run_upscale(procedure, run_mode, image, drawables, config, data):
    interactive = run_mode == Gimp.RunMode.INTERACTIVE

    def work(client, drawable):
        if interactive and not run_dialog(procedure, config, client, "Upscale x4", drawable):
            return None
        check_arguments(UPSCALE, config)
        result = upscale(image, drawable, client, config, interactive)
        Gimp.displays_flush()
        return result

    return guarded(procedure, image, drawables, work, returns_image=True)


def run_train(procedure, run_mode, image, drawables, config, data):
    from impasto_train import train_style  # next to this file

    return guarded(
        procedure, image, drawables, lambda c, d: train_style(procedure, run_mode, d, c, config)
    )


def guarded(procedure, image, drawables, work, returns_image: bool = False):
    """Run ``work`` and turn every failure into a GIMP error message the user can act on."""
    try:
        drawable = checked_layer(image, drawables)
        client = connect()
        from core.client import Cancelled, ImpastoError

        try:
            if not client.running():  # said only when true: it starts on the first request
                Gimp.progress_init("Impasto: starting the core (its first start takes a while)")
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

# The widest doubles GIMP accepts: a value outside an argument's range never reaches the plug-in
# (GObject keeps the default and only warns), so the ranges are checked in check_arguments.
ANY = sys.float_info.max


def add_arguments(procedure, name: str) -> None:
    """The arguments of procedure ``name`` (STYLIZE or UPSCALE), as scripts and the dialog see them.

    model and output are strings, not fixed choices: a style trained after GIMP started is usable
    at once, and a wrong value is refused with its name rather than replaced by the default."""
    rw = GObject.ParamFlags.READWRITE
    nicks = " or ".join(nick for nick, _ in OUTPUTS[name])
    if name == STYLIZE:
        procedure.add_string_argument("model", "_Style", "Style name (empty: the first)", "", rw)
        procedure.add_double_argument(
            "strength", "S_trength", "Blend with the original, 0-1 (1: full style)", -ANY, ANY, 1.0,
            rw,
        )  # fmt: skip
        procedure.add_boolean_argument(
            "preserve-colors", "_Preserve colors", "Keep the original colors", False, rw
        )
        procedure.add_double_argument(
            "style-scale",
            "Style sc_ale",  # _s is the dialog's Save Settings
            "Processing scale, 0.25-4: 0.5 gives strokes twice as large, 2 finer ones",
            -ANY,
            ANY,
            1.0,
            rw,
        )
        procedure.add_string_argument("output", "O_utput", nicks, "new-layer", rw)
    else:
        procedure.add_string_argument(
            "model", "_Model", "Upscaling model name (empty: the first)", "", rw
        )
        procedure.add_string_argument("output", "O_utput", nicks, "new-image", rw)
        procedure.add_string_argument(
            "source", "Sour_ce", "'layer' (the active one) or 'visible' (the image as seen)",
            "layer", rw,
        )  # fmt: skip


class Impasto(Gimp.PlugIn):
    def do_set_i18n(self, name):
        return False

    def do_query_procedures(self):
        # Help buttons open Impasto's own manual (install.py puts it in help/), not GIMP's.
        self.set_help_domain("impasto", Gio.File.new_for_path(str(HELP_DIR)))
        return [STYLIZE, UPSCALE, TRAIN]

    def do_create_procedure(self, name):
        if name == TRAIN:
            return create_train_procedure(self)
        run = run_stylize if name == STYLIZE else run_upscale
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_attribution("Impasto contributors", "Impasto contributors", "2026")
        if name == STYLIZE:
            procedure.set_menu_label("Neural _Style...")
            procedure.set_documentation(
                "Paint the layer in the style of an artwork (fast neural style transfer)",
                "Stylizes the active layer, or only the selection (feathering blends), keeping its "
                "alpha. 'model' is an installed style's name, empty for the first one.",
                name,  # the help ID, mapped to a page by help/en/gimp-help.xml
            )
        else:
            procedure.set_menu_label("_Upscale x4...")
            procedure.set_documentation(
                "Upscale the layer 4 times with a neural network (super-resolution)",
                "Upscales the active layer (source 'layer') or the image as seen ('visible') x4 "
                "into a new image named '<name> x4' (only the selection's bounds when there is a "
                "selection), or the whole image in place (other layers resized by GIMP). 'model' "
                "is an upscaler's name (e.g. sr-faithful, sr-sharp, sr-photo), empty for the first one.",
                name,
            )
        procedure.add_menu_path("<Image>/Filters")  # after the label, which GIMP needs first
        add_arguments(procedure, name)
        if name == UPSCALE:
            rw = GObject.ParamFlags.READWRITE
            procedure.add_image_return_value("new-image", "Image", "The upscaled image", True, rw)
        return procedure


def create_train_procedure(plugin):
    """Filters > New Style from Layer... (impasto_train)."""
    from impasto_train import add_train_arguments

    procedure = Gimp.ImageProcedure.new(plugin, TRAIN, Gimp.PDBProcType.PLUGIN, run_train, None)
    procedure.set_image_types("RGB*, GRAY*")
    procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
    procedure.set_attribution("Impasto contributors", "Impasto contributors", "2026")
    procedure.set_menu_label("New Style from _Layer...")
    procedure.set_documentation(
        "Train a new Neural Style from the layer (the painting) on a folder of your photos",
        "The layer, or the selection's part of it, is the painting. Impasto's server trains for "
        "'minutes' in the background on 'photos' (20+ of your own) and the style then appears in "
        "Neural Style under 'style-name'. Runs until the training ends; run again to cancel it.",
        TRAIN,
    )
    procedure.add_menu_path("<Image>/Filters")
    add_train_arguments(procedure)
    return procedure


if __name__ == "__main__":  # run by GIMP; imported by the dialog test's probe plug-in
    Gimp.main(Impasto.__gtype__, sys.argv)
