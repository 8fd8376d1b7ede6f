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


class Probe(Gimp.PlugIn):
    def do_set_i18n(self, name):
        return False

    def do_query_procedures(self):
        return list(PROBES)

    def do_create_procedure(self, name):
        procedure = Gimp.Procedure.new(self, name, Gimp.PDBProcType.PLUGIN, probe, None)
        impasto.add_arguments(procedure, PROBES[name])
        rw = GObject.ParamFlags.READWRITE
        procedure.add_string_argument("out", "Out", "Where the JSON goes", "", rw)
        return procedure


Gimp.main(Probe.__gtype__, sys.argv)
