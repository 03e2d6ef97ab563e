#!/usr/bin/env python3
"""``python tools/synth.py`` from a checkout: the same as the installed command
(:mod:`kwsd_tools.synth`)."""

import sys

from kwsd_tools.synth import main

if __name__ == "__main__":
    sys.exit(main())
