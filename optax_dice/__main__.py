"""``python -m optax_dice``: see :mod:`optax_dice.cli`."""

import sys

from optax_dice.cli import main

if __name__ == "__main__":
    sys.exit(main())
