"""Shared test set-up: the fixtures package (hub imitation, tiny GGUF maker, module runner, llama.cpp source)
and the jetsim harness are importable by name from every test tier."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# ... and the collection, as ansible_collections.jetson_llm.fleet (its parsers check what the devices print).
for folder in (
    TESTS / "fixtures",
    TESTS / "jetsim",
    TESTS / "jetsim/rootfs/usr/lib/jetsim",
    TESTS.parent / "collections",
):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
