#!/usr/bin/env python3
"""``python tools/check_dataset.py`` from a checkout: the same as the installed command
(:mod:`kwsd_tools.check_dataset`)."""

import sys

from kwsd_tools.check_dataset import main

if __name__ == "__main__":
    sys.exit(main())
