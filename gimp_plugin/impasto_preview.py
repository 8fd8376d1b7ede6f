"""The Neural Style dialog's live preview, computed by Impasto's core.

It shows the layer (the selection's bounds, as OK processes them) downscaled, or its centre at
1:1, stylized with the statistics of a thumbnail of the whole region: the ones OK's job measures,
so the colours and contrast are OK's. A change of the options restarts a short timer (dragging a
slider sends one job, not one per step); a change cancels the job still running, whose answer is
then never shown.
"""

import threading

import gi

gi.require_version("Gegl", "0.4")
gi.require_version("Gtk", "3.0")
gi.require_version("GdkPixbuf", "2.0")
from gi.repository import GdkPixbuf, Gegl, GLib, Gtk  # noqa: E402

VIEW_SIDE = 512  # longest side of the preview
THUMBNAIL_SIDE = 768  # the engine's: the thumbnail whose statistics every tile uses
DEBOUNCE_MS = 250
OPTIONS = ("model", "strength", "preserve-colors", "style-scale")  # what the preview shows


def read_scaled(drawable, box: tuple, side: int, fmt: str) -> tuple:
    """The pixels of ``box`` (x, y, width, height) scaled down to fit ``side``: (bytes, w, h)."""
    x, y, width, height = box
    scale = min(1.0, side / max(width, height))
    w, h = max(16, round(width * scale)), max(16, round(height * scale))
    # GEGL reads at a scale from its mipmaps; the rectangle is in scaled coordinates.
    rect = Gegl.Rectangle.new(round(x * scale), round(y * scale), w, h)
    data = drawable.get_buffer().get(rect, w / width, fmt, Gegl.AbyssPolicy.CLAMP)
    return bytes(data), w, h


def centre(box: tuple, side: int) -> tuple:
    """The box of at most ``side`` x ``side`` pixels at the centre of ``box``, at 1:1."""
    x, y, width, height = box
    w, h = min(width, side), min(height, side)
    return x + (width - w) // 2, y + (height - h) // 2, w, h


def as_pixbuf(data: bytes, width: int, height: int, fmt: str) -> GdkPixbuf.Pixbuf:
    """Pixels in ``fmt`` (gray or RGB, with or without alpha) as an RGBA pixbuf to show."""
    buffer = Gegl.Buffer.new(fmt, 0, 0, width, height)
    rect = Gegl.Rectangle.new(0, 0, width, height)
    buffer.set(rect, fmt, data)
    rgba = bytes(buffer.get(rect, 1.0, "R'G'B'A u8", Gegl.AbyssPolicy.CLAMP))
    return GdkPixbuf.Pixbuf.new_from_bytes(
        GLib.Bytes.new(rgba), GdkPixbuf.Colorspace.RGB, True, 8, width, height, width * 4
    )


class Preview:
    """The preview's widgets (``widget``) and the jobs behind them."""

    def __init__(self, client, drawable, box: tuple, exchange: tuple, config, names):
        """``exchange``: (babl format, channels, core sample type) of the drawable's pixels."""
        self.client, self.config = client, config
        self.fmt, self.channels, self.dtype = exchange
        fmt = self.fmt
        self.names = names  # model name -> the label people see
        self.whole = read_scaled(drawable, box, THUMBNAIL_SIDE, fmt)
        self.views = {
            False: read_scaled(drawable, box, VIEW_SIDE, fmt),
            True: read_scaled(drawable, centre(box, VIEW_SIDE), VIEW_SIDE, fmt),
        }
        self.image = Gtk.Image()
        self.image.set_size_request(VIEW_SIDE, VIEW_SIDE)  # the dialog does not jump when it comes
        self.status = Gtk.Label(label="")
        self.crop = Gtk.CheckButton(label="1:1 (the centre at full size)")
        self.widget = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=4)
        self.widget.pack_start(self.image, False, False, 0)
        self.widget.pack_start(self.status, False, False, 0)
        self.widget.pack_start(self.crop, False, False, 0)
        self.timer = 0
        self.cancel = threading.Event()
        self.generation = 0  # the newest job's number: older results are not shown
        self.started = 0  # jobs sent, for the tests
        self.shown: dict = {}  # what the image shows now: the options and view of its job
        self.crop.connect("toggled", lambda _button: self.changed())
        self.handler = config.connect("notify", self.option_changed)
        self.widget.connect("destroy", lambda _widget: self.stop())
        self.changed()

    def option_changed(self, _config, pspec) -> None:
        if pspec.name in OPTIONS:  # not e.g. the output, which the preview does not show
            self.changed()

    def changed(self) -> None:
        """Options changed: the running job is stale (cancelled, its answer dropped); (re)start
        the timer, and the next job starts when they stop changing."""
        self.cancel.set()
        self.generation += 1
        if self.timer:
            GLib.source_remove(self.timer)
        self.timer = GLib.timeout_add(DEBOUNCE_MS, self.start)

    def start(self) -> bool:
        self.timer = 0
        self.cancel = threading.Event()
        self.generation += 1
        self.started += 1
        options = {name: self.config.get_property(name) for name in OPTIONS}
        crop = self.crop.get_active()
        self.status.set_text("Computing the preview...")
        job = (self.generation, options, crop, self.cancel)
        threading.Thread(target=self.compute, args=job, daemon=True).start()
        return False  # a one-shot timer

    def compute(self, generation: int, options: dict, crop: bool, cancel: threading.Event):
        """In a worker thread: ask the core; hand the answer to GTK's thread."""
        from core.client import Cancelled, ImpastoError

        def phase(name: str) -> None:
            if name == "loading":
                label = self.names.get(options["model"], options["model"])
                GLib.idle_add(self.say, generation, f"Preparing {label}...")

        data, width, height = self.views[crop]
        try:
            result = self.client.preview(
                data,
                width,
                height,
                self.channels,
                self.whole,
                options["model"],
                strength=options["strength"],
                preserve_colors=options["preserve-colors"],
                scale=options["style-scale"],
                cancel=cancel,
                phase=phase,
                dtype=self.dtype,
            )
        except Cancelled:
            return
        except ImpastoError as e:
            GLib.idle_add(self.say, generation, f"No preview: {e}")
            return
        GLib.idle_add(self.show, generation, options, crop, result, width, height)

    def say(self, generation: int, text: str) -> bool:
        if generation == self.generation:
            self.status.set_text(text)
        return False

    def show(self, generation: int, options: dict, crop: bool, result, width, height) -> bool:
        if generation == self.generation:  # else a newer job is on its way
            self.image.set_from_pixbuf(as_pixbuf(result, width, height, self.fmt))
            self.status.set_text("1:1, the centre" if crop else "The whole layer, downscaled")
            self.shown = {"options": options, "crop": crop, "result": result}
        return False

    def stop(self) -> None:
        """The dialog closes (or OK's job starts): no more jobs, the running one cancelled."""
        if self.timer:
            GLib.source_remove(self.timer)
            self.timer = 0
        self.cancel.set()
        self.generation += 1  # answers still on their way are dropped
        if self.handler:
            self.config.disconnect(self.handler)
            self.handler = 0
