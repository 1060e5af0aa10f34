"""``python -m gradvis.train``: train a model (``--help`` lists the options)."""
import sys

from .trainer import main

sys.exit(main())
