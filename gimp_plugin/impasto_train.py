"""Filters > Neural Style > New Style from Layer...: the layer (or the selection) is the painting.

Impasto's server trains it in the background on a folder of the user's own photos; this plug-in
shows the training's progress and says when the style is in the Neural Style list. Closing GIMP
does not stop it (the server outlives GIMP); running the procedure again offers to cancel it.
"""

import time
from pathlib import Path

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gegl", "0.4")
gi.require_version("Gtk", "3.0")
from gi.repository import Gegl, Gimp, GimpUi, GLib, GObject, Gtk  # noqa: E402

TRAIN = "plug-in-impasto-train"
POLL_SECONDS = 1.0
OPTIONS = ("style-name", "minutes", "style-size", "photos")


def add_train_arguments(procedure) -> None:
    """The arguments scripts and the dialog see; the server checks their ranges."""
    rw = GObject.ParamFlags.READWRITE
    procedure.add_string_argument("style-name", "_Name", "The new style's name", "my-style", rw)
    procedure.add_double_argument(
        "minutes", "_Time budget (minutes)", "Training time: 20 on a CPU gives a usable style",
        0.1, 1440.0, 20.0, rw,
    )  # fmt: skip
    procedure.add_int_argument(
        "style-size", "St_rokes (px)", "The painting's size while training: larger gives larger strokes",
        64, 1024, 256, rw,
    )  # fmt: skip
    procedure.add_string_argument(
        "photos", "_Photos folder", "A folder of 20+ of your own photos (empty: Pictures)", "", rw
    )


def pictures_folder() -> str:
    """The platform's Pictures folder (XDG on Linux, the user's Pictures on Windows and macOS)."""
    folder = GLib.get_user_special_dir(GLib.UserDirectory.DIRECTORY_PICTURES)
    return folder or str(Path.home() / "Pictures")


def painting_pixels(drawable) -> tuple:
    """The layer's pixels within the selection's bounds, as 8-bit RGB: (bytes, width, height)."""
    inside, x, y, width, height = drawable.mask_intersect()
    if not inside:
        from core.client import ImpastoError

        raise ImpastoError("The selection does not touch this layer: select part of the painting.")
    rect = Gegl.Rectangle.new(x, y, width, height)
    data = drawable.get_buffer().get(rect, 1.0, "R'G'B' u8", Gegl.AbyssPolicy.CLAMP)
    return bytes(data), width, height


def ask_to_cancel(client, status: dict) -> bool:
    """A training already runs: True when the user chose to cancel it."""
    GimpUi.init(TRAIN)
    question = Gtk.MessageDialog(
        message_type=Gtk.MessageType.QUESTION,
        buttons=Gtk.ButtonsType.YES_NO,
        text=f"The style '{status['name']}' is training (step {status['step']}/{status['steps']}).",
    )
    question.format_secondary_text("One style trains at a time. Cancel this training?")
    cancel = question.run() == Gtk.ResponseType.YES
    question.destroy()
    if cancel:
        client.cancel_training()
    return cancel


def default_photos(config) -> None:
    """The Pictures folder until the user chose a folder (GIMP then remembers theirs)."""
    if not config.get_property("photos"):
        config.set_property("photos", pictures_folder())


def build_dialog(procedure, config):
    """The options dialog, with why the photos folder matters."""
    GimpUi.init(TRAIN)
    dialog = GimpUi.ProcedureDialog(
        procedure=procedure, config=config, title="New Style from Layer"
    )
    note = Gtk.Label(
        label="The layer (or selection) is the painting. Training learns from your own photos: "
        "at least 20 (each step uses 4 different ones, and a few photos would be copied rather "
        "than painted). Training continues if you close GIMP.",
        wrap=True,
        max_width_chars=50,
    )
    dialog.get_content_area().pack_start(note, False, False, 6)
    note.show()
    dialog.fill(list(OPTIONS))
    return dialog


def run_dialog(procedure, config) -> bool:
    """The options dialog; True on OK."""
    dialog = build_dialog(procedure, config)
    accepted = dialog.run()
    dialog.destroy()
    return accepted


def train_style(procedure, run_mode, drawable, client, config):
    """Start training from the layer and follow it to its end; True when the style is ready."""
    from core.client import ImpastoError
    from core.training import photo_folder_problem

    interactive = run_mode == Gimp.RunMode.INTERACTIVE
    status = client.training()
    if interactive and status["state"] == "running":
        ask_to_cancel(client, status)
        return None
    default_photos(config)
    if interactive and not run_dialog(procedure, config):
        return None
    name, photos = config.get_property("style-name"), config.get_property("photos")
    problem = photo_folder_problem(photos)
    if problem:
        raise ImpastoError(f"{problem[0].upper()}{problem[1:]}.")
    rgb, width, height = painting_pixels(drawable)
    minutes, style_size = config.get_property("minutes"), config.get_property("style-size")
    client.train(name, rgb, width, height, photos, minutes, style_size)
    status = follow(client, name)
    if status["state"] == "failed":
        raise ImpastoError(f"Training '{name}' failed: {status['message']}")
    if status["state"] != "done":
        return None
    Gimp.message(f"The style '{name}' is ready: choose it in Filters > Neural Style.")
    return True


def follow(client, name: str) -> dict:
    """Show the training's progress until it ends; its last status."""
    Gimp.progress_init(f"New style {name}: starting")
    while True:
        status = client.training()
        if status["state"] != "running":
            return status
        if status["steps"]:
            Gimp.progress_set_text(
                f"New style {name}: step {status['step']}/{status['steps']}, {status['eta']} left"
            )
            Gimp.progress_update(status["step"] / status["steps"])
        else:
            Gimp.progress_pulse()
        time.sleep(POLL_SECONDS)
