"""``python -m mailserverd`` runs the command-line interface."""

import sys

from mailserverd.cli import main

sys.exit(main())
