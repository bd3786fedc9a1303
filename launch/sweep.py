#!/usr/bin/env python
"""The sweep tool, as launch/sweep.py: the same as `python -m trlx_jax.cli.sweep`.

Needs: this package installed (`pip install -e .`). `launch/sweep.py --help` lists the commands
(status, run, print, aggregate); the sweep file format is in trlx_jax/sweep/spec.py.
"""

import sys

from trlx_jax.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
