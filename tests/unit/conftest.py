"""Shared pytest setup for the unit tests."""

from __future__ import annotations

import sys
from pathlib import Path

# Make the local collection importable as ansible_collections.jetson_llm.fleet.
COLLECTIONS_DIR = Path(__file__).resolve().parents[2] / "collections"
if str(COLLECTIONS_DIR) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS_DIR))
