"""Facts about the networks that code without torch needs: widths and receptive field."""

from __future__ import annotations

# Channels of the first, second and third stage: the paper's width and half of it
# (the original author's released instance-norm models).
STYLE_WIDTHS = {"full": 32, "compact": 16}

# Context a tile needs on each side (input pixels) for its centre to equal the whole-image result.
SR_RECEPTIVE_RADIUS = 16
