#!/usr/bin/env python3
"""``python tools/measure_frozen_import.py`` from a checkout: the same as the installed command
(:mod:`kwsd_tools.measure_frozen_import`)."""

import sys

from kwsd_tools.measure_frozen_import import main

if __name__ == "__main__":
    sys.exit(main())
