#!/usr/bin/env python3
"""A test plug-in for the e2e tests: opens Impasto's real dialogs in GIMP, uses them as a person
does (picks a model, Save Settings, Reset > Reset to Factory Defaults, Load Saved Settings, Cancel)
and writes what the widgets show at each step to a JSON file.

Installed next to the Impasto plug-in (plug-ins/impasto-probe/impasto-probe.py) by the e2e tests.
"""

import json
import sys
from pathlib import Path

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gtk", "3.0")
from gi.repository import Gimp, GimpUi, GLib, GObject, Gtk  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "impasto"))
import impasto  # noqa: E402

PROBES = {"impasto-probe-stylize": impasto.STYLIZE, "impasto-probe-upscale": impasto.UPSCALE}
PICK = {impasto.STYLIZE: "wide", impasto.UPSCALE: "sr"}  # the test's models (e2e session)
RESPONSE_RESET = 1  # GimpProcedureDialog's Reset button: it pops up the two reset buttons


def descendants(widget) -> list:
    """Every widget inside ``widget``, popovers included (forall walks a window's internals)."""
    found = [widget]
    if isinstance(widget, Gtk.Container):
        widget.forall(lambda child: found.extend(descendants(child)))
    return found


def click(dialog, label: str) -> None:
    """Click the dialog's button labelled ``label`` (with its mnemonic underscore)."""
    for widget in descendants(dialog):
        if isinstance(widget, Gtk.Button) and widget.get_label() == label:
            widget.clicked()
            return
    raise LookupError(f"no button {label!r} in the dialog")


def active(combo) -> str:
    return GimpUi.StringComboBox.get_active(combo)  # the id of the row shown


def choose(combo, options: list, wanted: str) -> None:
    """Choose a row as a click in the open list does (GtkComboBox's active row)."""
    Gtk.ComboBox.set_active(combo, options.index(wanted))


def widgets(name: str, dialog, model, output) -> dict:
    """What the user sees in the dialog."""
    seen = {"model": active(model), "output": active(output)}
    seen["model_tooltip"] = model.get_tooltip_text()
    seen["labels"] = [w.get_text() for w in descendants(dialog) if isinstance(w, Gtk.Label)]
    if name == impasto.STYLIZE:
        for prop in ("strength", "style-scale"):
            adjustment = dialog.get_spin_scale(prop, 1.0).get_adjustment()
            seen[prop] = [adjustment.get_lower(), adjustment.get_upper(), adjustment.get_value()]
    return seen


def probe(procedure, config, _data):
    name = PROBES[procedure.get_name()]
    out = Path(config.get_property("out"))  # read first: Reset empties it too
    client = impasto.connect()
    kind = "style" if name == impasto.STYLIZE else "sr"
    models, health = client.models(kind), client.health()
    dialog, model, output = impasto.build_dialog(name, procedure, config, models, health, "probe")
    names = [m["name"] for m in models]
    seen = {"first": names[0]}

    def pick_save_and_reset() -> bool:
        seen["opened"] = widgets(name, dialog, model, output)
        choose(model, names, PICK[name])  # the user picks a model ...
        choose(output, [nick for nick, _ in impasto.OUTPUTS[name]], "in-place")  # ... and output
        seen["picked"] = {k: config.get_property(k) for k in ("model", "output")}
        click(dialog, "_Save Settings")
        dialog.response(RESPONSE_RESET)
        GLib.timeout_add(300, factory_defaults_then_load)
        return False

    def factory_defaults_then_load() -> bool:
        click(dialog, "Reset to _Factory Defaults")
        seen["reset"] = {
            **widgets(name, dialog, model, output),
            "runs": config.get_property("model"),
        }
        click(dialog, "_Load Saved Settings")
        seen["loaded"] = widgets(name, dialog, model, output)
        if "tiny" in names:
            choose(model, names, "tiny")
            seen["tiny_tooltip"] = model.get_tooltip_text()
        dialog.response(Gtk.ResponseType.CANCEL)
        return False

    GLib.timeout_add(300, pick_save_and_reset)
    dialog.run()
    dialog.destroy()
    out.write_text(json.dumps(seen))
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


def probe_preview(procedure, run_mode, image, drawables, config, _data):
    """Neural Style's preview on a layer: first answer (the model loads), a burst of changes, the
    1:1 toggle, and a change that supersedes a running job; dumps what it showed."""
    out = Path(config.get_property("out"))
    client = impasto.connect()
    models, health = client.models("style"), client.health()
    name = impasto.STYLIZE
    config.set_property("output", "in-place")  # as last used: the dialog must keep it
    dialog, _, output = impasto.build_dialog(name, procedure, config, models, health, "probe")
    config.set_property("model", "tiny")
    preview = impasto.add_preview(dialog, client, drawables[0], config, models)
    seen = {"texts": [], "shown": [], "sent": {}, "output": active(output)}
    steps = []

    def dump(tag: str) -> None:
        shown = preview.shown
        data, width, height = preview.views[shown["crop"]]
        (out.parent / f"preview-{tag}.raw").write_bytes(shown["result"])
        (out.parent / f"preview-{tag}-view.raw").write_bytes(data)
        seen["sent"][tag] = {"size": [width, height], "options": shown["options"]}

    def watch() -> bool:
        text = preview.status.get_text()
        if not seen["texts"] or seen["texts"][-1] != text:
            seen["texts"].append(text)
        if preview.shown and (not seen["shown"] or seen["shown"][-1] is not preview.shown):
            seen["shown"].append(preview.shown)
        if steps and steps[0]():
            steps.pop(0)
        return bool(steps)

    def shown(strength: float, crop: bool):
        def check() -> bool:
            got = preview.shown
            return bool(got) and got["options"]["strength"] == strength and got["crop"] == crop

        return check

    def first() -> bool:
        if not shown(1.0, False)():
            return False
        dump("whole")
        seen["started_before_burst"] = preview.started
        for strength in (0.9, 0.8, 0.7, 0.6, 0.5):  # as fast as a dragged slider
            config.set_property("strength", strength)
        return True

    def after_burst() -> bool:
        if not shown(0.5, False)():
            return False
        seen["started_by_burst"] = preview.started - seen["started_before_burst"]
        preview.crop.set_active(True)
        return True

    def cropped() -> bool:
        if not shown(0.5, True)():
            return False
        dump("crop")
        seen["started_before_supersede"] = preview.started
        config.set_property("strength", 0.3)
        return True

    def supersede() -> bool:
        if preview.started == seen["started_before_supersede"]:
            return False  # the 0.3 job has not started yet
        config.set_property("strength", 0.2)  # while it runs
        return True

    def final() -> bool:
        if not shown(0.2, True)():
            return False
        seen["strengths_shown"] = [s["options"]["strength"] for s in seen["shown"]]
        dialog.response(Gtk.ResponseType.CANCEL)
        return True

    steps.extend([first, after_burst, cropped, supersede, final])
    GLib.timeout_add(10, watch)
    GLib.timeout_add(120_000, lambda: dialog.response(Gtk.ResponseType.CANCEL))  # a stuck probe
    dialog.run()
    dialog.destroy()
    seen.pop("shown")
    out.write_text(json.dumps(seen))
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


def probe_progress(procedure, run_mode, image, drawables, config, _data):
    """Neural Style's job with GIMP's progress calls recorded on their way to GIMP (each still
    goes through): what the status bar told the user, in order."""
    out = Path(config.get_property("out"))
    calls = []

    def recorded(name: str):
        real = getattr(Gimp, name)

        def call(*args):
            calls.append([name, *args])
            return real(*args)

        return call

    for name in ("progress_init", "progress_set_text", "progress_update", "progress_pulse"):
        setattr(Gimp, name, recorded(name))
    impasto.stylize(image, drawables[0], impasto.connect(), config)
    out.write_text(json.dumps(calls))
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


def probe_screenshot(procedure, run_mode, image, drawables, config, _data):
    """Neural Style's dialog as a user sees it, once its preview is in: the whole view, then the
    1:1 crop; each saved as out-NAME.png (for docs/gimp.md, by bench/gimp_screenshots.py)."""
    gi.require_version("Gdk", "3.0")
    from gi.repository import Gdk

    out = Path(config.get_property("out"))
    client = impasto.connect()
    models, health = client.models("style"), client.health()
    name = impasto.STYLIZE
    # Titled apart from "Neural Style", which the test display's watcher accepts at once.
    dialog = impasto.build_dialog(name, procedure, config, models, health, "screenshot")[0]
    preview = impasto.add_preview(dialog, client, drawables[0], config, models)
    wanted = [False, True]  # crop off, then on

    ready = []

    def capture() -> bool:
        shown = preview.shown
        if not shown or shown["crop"] != wanted[0]:
            return True  # not there yet
        if not ready:
            ready.append(True)  # drawn by the next tick
            return True
        ready.clear()
        window = dialog.get_window()
        width, height = window.get_width(), window.get_height()
        shot = Gdk.pixbuf_get_from_window(window, 0, 0, width, height)
        shot.savev(str(out.parent / f"{out.stem}-{'1to1' if wanted[0] else 'whole'}.png"), "png")
        wanted.pop(0)
        if wanted:
            preview.crop.set_active(True)
            return True
        dialog.response(Gtk.ResponseType.CANCEL)
        return False

    GLib.timeout_add(500, capture)  # after the widgets are drawn
    GLib.timeout_add(300_000, lambda: dialog.response(Gtk.ResponseType.CANCEL))
    dialog.run()
    dialog.destroy()
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


def probe_train(procedure, run_mode, image, drawables, config, _data):
    """New Style from Layer's dialog as it opens: its texts, fields and default photos folder."""
    import impasto_train

    out = Path(config.get_property("out"))
    impasto_train.default_photos(config)
    dialog = impasto_train.build_dialog(procedure, config)
    seen = {}

    def look() -> bool:
        found = descendants(dialog)
        seen["labels"] = [w.get_text() for w in found if isinstance(w, Gtk.Label)]
        seen["entries"] = [w.get_text() for w in found if isinstance(w, Gtk.Entry)]
        seen["photos"] = config.get_property("photos")
        dialog.response(Gtk.ResponseType.CANCEL)
        return False

    GLib.timeout_add(300, look)
    seen["accepted"] = dialog.run() == Gtk.ResponseType.OK
    dialog.destroy()
    out.write_text(json.dumps(seen))
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


IMAGE_PROBES = {
    "impasto-probe-screenshot": probe_screenshot,
    "impasto-probe-preview": probe_preview,
    "impasto-probe-progress": probe_progress,
    "impasto-probe-train": probe_train,
}


class Probe(Gimp.PlugIn):
    def do_set_i18n(self, name):
        return False

    def do_query_procedures(self):
        return [*PROBES, *IMAGE_PROBES]

    def do_create_procedure(self, name):
        if name in IMAGE_PROBES:
            run = IMAGE_PROBES[name]
            procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
            if name == "impasto-probe-train":
                import impasto_train

                impasto_train.add_train_arguments(procedure)
            else:
                impasto.add_arguments(procedure, impasto.STYLIZE)
        else:
            procedure = Gimp.Procedure.new(self, name, Gimp.PDBProcType.PLUGIN, probe, None)
            impasto.add_arguments(procedure, PROBES[name])
        rw = GObject.ParamFlags.READWRITE
        procedure.add_string_argument("out", "Out", "Where the JSON goes", "", rw)
        return procedure


Gimp.main(Probe.__gtype__, sys.argv)
