"""`python -m core`: see core.cli."""

import os
import sys

from core.cli import EXIT_INTERRUPTED, main

code = main()
if code == EXIT_INTERRUPTED:
    # An OpenVINO inference already running cannot be aborted and would hold up a normal exit
    # for seconds; every output file is already complete or removed, so leave at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
