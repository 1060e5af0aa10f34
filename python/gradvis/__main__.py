"""``python -m gradvis``: the same as the ``gradvis`` command."""
import sys

from .cli import main

sys.exit(main())
