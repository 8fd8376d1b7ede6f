"""``python -m trainer``: train a style or super-resolution model."""

import sys

from trainer.cli import main

sys.exit(main())
