"""The gate's backend proof: jetson_llm.fleet.llama_backend on llama-server logs.

Each log is written with llama.cpp b11312's own format strings (quoted beside each line) filled in the way an Orin
NX 16GB with Llama-3.2-3B (28 layers + output = 29) prints them, or with the errors CUDA and L4T print in the
public reports of a CPU fallback (dusty-nv/jetson-containers#1136 and #740, ollama/ollama#1289).
"""

from __future__ import annotations

import pytest
from ansible_collections.jetson_llm.fleet.plugins.filter.llama import llama_backend, llama_backend_ok

# ggml-cuda.cu:267  "%s: found %d " GGML_CUDA_NAME " devices (Total VRAM: %zu MiB):\n"
# ggml-cuda.cu:339  "  Device %d: %s, compute capability %d.%d, VMM: %s, VRAM: %zu MiB\n"
CUDA_INIT = (
    "ggml_cuda_init: found 1 CUDA devices (Total VRAM: 15656 MiB):\n"
    "  Device 0: Orin, compute capability 8.7, VMM: yes, VRAM: 15656 MiB\n"
)
# llama.cpp:306  "%s: using device %s (%s) (%s) - %zu MiB free\n"
USING_CUDA = "llama_model_load_from_file_impl: using device CUDA0 (Orin) (0000:00:00.0) - 11873 MiB free\n"
# llama-model.cpp:1916-1924  offloading output layer / %d repeating layers / "offloaded %d/%d layers to GPU"
OFFLOAD_ALL = (
    "load_tensors: offloading output layer to GPU\n"
    "load_tensors: offloading 28 repeating layers to GPU\n"
    "load_tensors: offloaded 29/29 layers to GPU\n"
    "load_tensors:        CUDA0 model buffer size =  1918.35 MiB\n"
    "load_tensors:   CPU_Mapped model buffer size =   308.23 MiB\n"
)
GPU_LOG = (
    "build: 11312 (0c1e57098) with cc (Ubuntu 11.4.0) for aarch64-linux-gnu\n" + CUDA_INIT + USING_CUDA + OFFLOAD_ALL
)
# A CPU build: no ggml_cuda_init, llama_supports_gpu_offload() is false, so no "offloaded" line; arg.cpp:2800 warns.
CPU_BUILD_LOG = (
    "warning: no usable GPU found, --gpu-layers option will be ignored\n"
    "warning: one possible reason is that llama.cpp was compiled without GPU support\n"
    "load_tensors: loading model tensors, this can take a while... (mmap = true, direct_io = false)\n"
    "load_tensors:   CPU_Mapped model buffer size =  1918.35 MiB\n"
)
# ggml-cuda.cu:226  "%s: failed to initialize " GGML_CUDA_NAME ": %s\n" with cudaGetErrorString(err)
NVMAP_DENIED_LOG = (
    "NvRmMemInitNvmap failed with Permission denied\n"
    "549: Memory Manager Not supported\n"
    "ggml_cuda_init: failed to initialize CUDA: operation not supported\n"
    "warning: no usable GPU found, --gpu-layers option will be ignored\n"
)
OLD_DRIVER_LOG = (
    "ggml_cuda_init: failed to initialize CUDA: CUDA driver version is insufficient for CUDA runtime version\n"
    "warning: no usable GPU found, --gpu-layers option will be ignored\n"
)
NO_DEVICE_LOG = (
    "ggml_cuda_init: failed to initialize CUDA: no CUDA-capable device is detected\n"
    "warning: no usable GPU found, --gpu-layers option will be ignored\n"
)
# ggml-cuda.cu:888  "%s: allocating %.2f MiB on device %d: cudaMalloc failed: %s\n"; NvMap's own line on Jetson.
OOM_LOG = (
    CUDA_INIT
    + USING_CUDA
    + "load_tensors: offloaded 29/29 layers to GPU\n"
    + "NvMapMemAllocInternalTagged: 1075072515 error 12\n"
    + "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 4384.00 MiB on device 0: cudaMalloc failed: "
    "out of memory\n"
    + "llama_init_from_model: failed to initialize the context: failed to allocate buffer for kv cache\n"
)
PARTIAL_LOG = CUDA_INIT + USING_CUDA + "load_tensors: offloaded 20/29 layers to GPU\n"


def test_all_layers_on_cuda_pass() -> None:
    backend = llama_backend(GPU_LOG)
    assert (backend["name"], backend["gpu_layers"], backend["layers"], backend["device"]) == ("CUDA", 29, 29, "CUDA0")
    assert backend["cuda_devices"] == 1 and backend["cause"] is None
    assert llama_backend_ok(backend) and llama_backend_ok(backend, 29) and llama_backend_ok(backend, "auto")
    assert "load_tensors: offloaded 29/29 layers to GPU" in backend["evidence"]


@pytest.mark.parametrize(
    ("log", "cause", "fix_mentions"),
    [
        (CPU_BUILD_LOG, "no CUDA backend", "llama_cpp_build_cuda"),
        (NVMAP_DENIED_LOG, "device permission", "--group-add"),
        (OLD_DRIVER_LOG, "CUDA driver too old", "JetPack 6.1"),
        (NO_DEVICE_LOG, "no GPU visible", "NVIDIA runtime"),
    ],
    ids=["cpu-build", "nvmap-permission", "old-driver", "no-device"],
)
def test_each_cpu_fallback_names_its_cause(log: str, cause: str, fix_mentions: str) -> None:
    backend = llama_backend(log)
    assert backend["name"] == "CPU" and backend["gpu_layers"] == 0
    assert backend["cause"] == cause
    assert fix_mentions in backend["fix"]
    assert not llama_backend_ok(backend)


def test_out_of_memory_is_named() -> None:
    backend = llama_backend(OOM_LOG)
    assert backend["cause"] == "out of memory"
    assert any("cudaMalloc failed: out of memory" in line for line in backend["evidence"])


def test_fewer_layers_than_asked_fail() -> None:
    backend = llama_backend(PARTIAL_LOG)
    assert (backend["name"], backend["gpu_layers"], backend["layers"]) == ("CUDA", 20, 29)
    assert backend["cause"] == "partial offload"
    assert not llama_backend_ok(backend)
    assert llama_backend_ok(backend, 20)  # exactly what was asked for


def test_last_load_counts_and_empty_log_is_cpu() -> None:
    # A server log holds one load; a restart inside the same log stream must not hide the later, failed one.
    assert llama_backend(GPU_LOG + CPU_BUILD_LOG + "load_tensors: offloaded 0/29 layers to GPU\n")["gpu_layers"] == 0
    assert llama_backend("")["name"] == "CPU" and not llama_backend_ok(None)
