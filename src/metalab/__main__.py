"""``python -m metalab`` (also what ``torchrun -m metalab`` runs)."""
import sys

from metalab.cli import main

sys.exit(main())
