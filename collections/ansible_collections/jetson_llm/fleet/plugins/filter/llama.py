# Copyright: jetson-llm-fleet developers
# Apache License 2.0 (see galaxy.yml)
"""Filter ``jetson_llm.fleet.llama_backend``: what llama-server itself reported at load, from its log.

The lines it reads are llama.cpp b11312's own format strings:

- ``ggml/src/ggml-cuda/ggml-cuda.cu``: ``ggml_cuda_init: found %d CUDA devices ...``,
  ``  Device %d: %s, compute capability %d.%d, VMM: %s, VRAM: %zu MiB`` and
  ``ggml_cuda_init: failed to initialize CUDA: %s`` (cudaGetErrorString);
- ``src/llama.cpp``: ``llama_model_load_from_file_impl: using device %s (%s) (%s) - %zu MiB free``;
- ``src/llama-model.cpp``: ``load_tensors: offloaded %d/%d layers to GPU`` (printed only when the build can offload);
- ``common/arg.cpp``: ``warning: no usable GPU found, --gpu-layers option will be ignored``.
"""

from __future__ import annotations

import re
from typing import Any

_OFFLOADED = re.compile(r"load_tensors: offloaded (-?\d+)/(\d+) layers to GPU")
_USING = re.compile(r"using device (\S+) \(([^)]*)\)")
_CUDA_FOUND = re.compile(r"ggml_cuda_init: found (\d+) CUDA devices")
_CUDA_FAILED = re.compile(r"ggml_cuda_init: failed to initialize CUDA: (.*)")

# (cause, fix, patterns): the first cause whose pattern is in the log names the likely reason of a CPU fallback.
CAUSES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "device permission",
        "the server's user cannot open the GPU device nodes (/dev/nvmap, /dev/nvhost-*): start the container with "
        "--group-add for the group owning them (llama_server adds it from the device; see llama_server_extra_groups)",
        ("nvrmmeminitnvmap failed", "permission denied", "operation not permitted", "operation not supported"),
    ),
    (
        "CUDA driver too old",
        "the image's CUDA is newer than the board's driver (Jetson has no minor-version compatibility): flash "
        "JetPack 6.1+ (L4T 36.4) or use images built for the board's L4T",
        ("driver version is insufficient", "forward compatibility was attempted", "cuda driver version"),
    ),
    (
        "out of memory",
        "the weights, KV cache or compute buffers do not fit: lower llama_server_ctx_size / llama_server_parallel, "
        "use a smaller model, or free memory on the board",
        ("out of memory", "cudamalloc failed", "nvmapmemallocinternaltagged", "failed to allocate", "error 12"),
    ),
    (
        "no GPU visible",
        "the container sees no CUDA device: run it with the NVIDIA runtime (llama_server_docker_runtime: nvidia, "
        "container_runtime_nvidia: true)",
        ("no cuda-capable device", "no usable gpu found"),
    ),
)

# Lines quoted as evidence: the first three patterns of each cause, the specific ones (a later one such as
# "error 12" also matches unrelated lines).
_EVIDENCE_PATTERNS = tuple(pattern for _cause, _fix, patterns in CAUSES for pattern in patterns[:3])


def llama_backend(log: Any, gpu_layers_requested: Any = "all") -> dict[str, Any]:
    """``{name, gpu_layers, layers, device, cuda_devices, cause, fix, evidence}`` from llama-server's log.

    name is "CUDA" when a CUDA device was used and at least one layer was offloaded, else "CPU";
    layers is the model's offloadable layer count (None when the build cannot offload, so it never printed it);
    cause/fix name the likely reason when the log shows a CUDA problem (None otherwise).
    """
    text = str(log or "")
    offloaded = _OFFLOADED.findall(text)
    gpu_layers, layers = (max(int(offloaded[-1][0]), 0), int(offloaded[-1][1])) if offloaded else (0, None)
    devices = [match[0] for match in _USING.findall(text)]
    cuda_devices = [name for name in devices if name.startswith("CUDA")]
    found = _CUDA_FOUND.findall(text)
    cuda_lines = _CUDA_FAILED.findall(text)
    name = "CUDA" if cuda_devices and gpu_layers > 0 else "CPU"
    lowered = text.lower()
    cause = fix = None
    if name == "CPU" and not found and not cuda_lines and "nvrm" not in lowered:
        cause = "no CUDA backend"
        fix = "the image has no CUDA backend (a CPU build): build it with llama_cpp_build_cuda: true"
    partial = _partial(gpu_layers, layers, gpu_layers_requested)
    for candidate, candidate_fix, patterns in CAUSES if cause is None else ():
        if any(pattern in lowered for pattern in patterns) and (
            name == "CPU" or partial or candidate == "out of memory"
        ):
            cause, fix = candidate, candidate_fix
            break
    if cause is None and name == "CUDA" and partial:
        cause = "partial offload"
        fix = "not every layer fits on the GPU: lower the context or the slots, or use a smaller model"
    evidence = [
        line.strip()
        for line in text.splitlines()
        if _OFFLOADED.search(line)
        or _USING.search(line)
        or "ggml_cuda_init" in line
        or "no usable GPU" in line
        or any(pattern in line.lower() for pattern in _EVIDENCE_PATTERNS)
    ]
    return {
        "name": name,
        "gpu_layers": gpu_layers,
        "layers": layers,
        "device": cuda_devices[0] if cuda_devices else (devices[0] if devices else None),
        "cuda_devices": int(found[-1]) if found else 0,
        "cause": cause,
        "fix": fix,
        "evidence": evidence[-8:],
    }


def _partial(gpu_layers: int, layers: int | None, requested: Any) -> bool:
    """True when fewer layers are on the GPU than were asked for ("all"/"auto"/-1/-2 = every layer)."""
    if layers is None:
        return False
    wanted = str(requested).strip()
    target = layers if wanted in ("all", "auto", "-1", "-2", "") else min(int(wanted), layers)
    return gpu_layers < target


def llama_backend_ok(backend: Any, gpu_layers_requested: Any = "all") -> bool:
    """True when the parsed backend serves from CUDA with every requested layer on the GPU."""
    if not isinstance(backend, dict):
        return False
    return backend.get("name") == "CUDA" and not _partial(
        int(backend.get("gpu_layers") or 0), backend.get("layers"), gpu_layers_requested
    )


class FilterModule:
    """llama.cpp log filters."""

    def filters(self) -> dict[str, Any]:
        return {"llama_backend": llama_backend, "llama_backend_ok": llama_backend_ok}
