"""The analysis tests' helper module (analysis_testing.py) is importable from every test here."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
