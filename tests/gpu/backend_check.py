#!/usr/bin/env python3
"""The gate's backend check on one llama-server log: ``backend_check.py LOG [--gpu-layers all]``.

Prints what jetson_llm.fleet.llama_backend read from the log (JSON) and exits 0 when llama_backend_ok says the
server serves from CUDA with every requested layer on the GPU, 1 when it does not, 2 when the check is missing.
Standard library only (the GPU machine has no Ansible): the filter module is imported from the collection tree.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "collections"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--gpu-layers", default="all")
    args = parser.parse_args(argv)
    try:
        from ansible_collections.jetson_llm.fleet.plugins.filter.llama import llama_backend, llama_backend_ok
    except ImportError as error:  # the gate's check is not in this tree
        print(
            f"backend check unavailable ({error}): expected plugins/filter/llama.py in the collection", file=sys.stderr
        )
        return 2
    backend = llama_backend(args.log.read_text(errors="replace"), args.gpu_layers)
    ok = llama_backend_ok(backend, args.gpu_layers)
    print(json.dumps({"ok": ok, **backend}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
