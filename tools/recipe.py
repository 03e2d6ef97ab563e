#!/usr/bin/env python3
"""``python tools/recipe.py`` from a checkout: the same as the installed command
(:mod:`kwsd_tools.recipe`)."""

import sys

from kwsd_tools.recipe import main

if __name__ == "__main__":
    sys.exit(main())
