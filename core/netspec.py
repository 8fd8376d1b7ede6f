"""Facts about the networks that code without torch needs: widths, receptive field, option bounds."""

from __future__ import annotations

# Channels of the first, second and third stage: the paper's width and half of it
# (the original author's released instance-norm models).
STYLE_WIDTHS = {"full": 32, "compact": 16}

SR_DEFAULT_BLOCKS = 4  # residual blocks of the x4 network unless its model file says otherwise


def sr_margin(options: dict) -> int:
    """Context an x4 tile needs on each side (input pixels) for its centre to equal the whole-image
    result: the receptive radius (9x9 head 4, 2 per residual block, the upsampling tail < 3)."""
    return 8 + 2 * int(options.get("blocks", SR_DEFAULT_BLOCKS))


# Bounds on what a model file may ask for, checked before anything is built: a tiny file must not
# make the loader allocate gigabytes. Each option: allowed values, or an inclusive (low, high).
ARCHITECTURES: dict[str, dict[str, tuple | range]] = {
    "style": {"width": tuple(STYLE_WIDTHS)},
    "sr": {"channels": range(8, 257), "blocks": range(1, 33)},
}


def check_options(arch: str, options: object) -> str | None:
    """Why a network cannot be built from these options (unknown, wrong type, out of bounds), or None."""
    if arch not in ARCHITECTURES:
        return f"unknown architecture {arch!r}: expected 'style' or 'sr'"
    if not isinstance(options, dict):
        return f"options must be a mapping, not {type(options).__name__}"
    allowed = ARCHITECTURES[arch]
    for key, value in options.items():
        if key not in allowed:
            return f"unknown option {str(key)[:40]!r} for the {arch} network"
        bound = allowed[key]
        ok = (
            isinstance(value, int) and not isinstance(value, bool)
            if isinstance(bound, range)
            else True
        )
        if not ok or value not in bound:
            shown = f"{bound.start} to {bound.stop - 1}" if isinstance(bound, range) else bound
            return f"{arch} option {key}={repr(value)[:40]} is outside {shown}"
    return None
