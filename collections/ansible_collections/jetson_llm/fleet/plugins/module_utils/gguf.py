# Copyright: jetson-llm-fleet developers
# Apache License 2.0 (see galaxy.yml)
"""GGUF metadata reader and llama.cpp memory estimate, in pure Python (standard library only).

Runs on the controller with nothing but requirements.txt (no numpy, no gguf package) and reads only
the header of a multi-GB model: scalar values and small arrays are decoded, large arrays (the
tokenizer's tokens, scores, merges) are skipped and only their length is kept.

GGUF layout (v2/v3, little-endian): magic ``GGUF``, uint32 version, uint64 tensor count, uint64 KV
count, then KV pairs (string key, uint32 value type, value); strings are a uint64 length plus UTF-8
bytes; arrays are a uint32 element type, a uint64 count and the elements.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

__all__ = [
    "CACHE_TYPE_BLOCKS",
    "DEFAULT_OVERHEAD_BYTES",
    "GGML_TYPE_BLOCKS",
    "LOAD_MODES",
    "MIB",
    "GGUFError",
    "effective_load_mode",
    "estimate_memory",
    "model_summary",
    "read_gguf_metadata",
    "split_shard",
    "weights_layout",
]

MIB = 1024 * 1024
GGUF_MAGIC = b"GGUF"
DEFAULT_MAX_ARRAY_LEN = 256
#: Fixed runtime allowance: CUDA context, cuBLAS workspace, host-side buffers, llama-server itself.
DEFAULT_OVERHEAD_BYTES = 256 * MIB

#: KV cache element types (llama.cpp ``-ctk``/``-ctv``): (elements per block, bytes per block).
CACHE_TYPE_BLOCKS: dict[str, tuple[int, int]] = {
    "f32": (1, 4),
    "f16": (1, 2),
    "bf16": (1, 2),
    "q8_0": (32, 34),
    "q4_0": (32, 18),
    "q4_1": (32, 20),
    "iq4_nl": (32, 18),
    "q5_0": (32, 22),
    "q5_1": (32, 24),
}

#: ggml tensor types (ggml.h ``enum ggml_type``, b11312): id -> (name, elements per block, bytes per block).
GGML_TYPE_BLOCKS: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
    42: ("Q2_0", 64, 18),
}

#: llama.cpp b11312 ``--load-mode`` values (common/arg.cpp).
LOAD_MODES = ("auto", "none", "mmap", "mlock", "mmap+mlock", "dio")

# GGUF value types -> (name, struct format or None for string/array).
_TYPES: dict[int, tuple[str, str | None]] = {
    0: ("uint8", "<B"),
    1: ("int8", "<b"),
    2: ("uint16", "<H"),
    3: ("int16", "<h"),
    4: ("uint32", "<I"),
    5: ("int32", "<i"),
    6: ("float32", "<f"),
    7: ("bool", "<?"),
    8: ("string", None),
    9: ("array", None),
    10: ("uint64", "<Q"),
    11: ("int64", "<q"),
    12: ("float64", "<d"),
}
_STRING = 8
_ARRAY = 9
_MAX_STRING = 256 * MIB  # a chat template is a few KiB; anything this big means a corrupt header
_MAX_COUNT = 1 << 40
_READ_CHUNK = 1 << 20


class GGUFError(ValueError):
    """The file is not a readable GGUF (bad magic, unsupported version, truncated or corrupt header)."""


class _Cursor:
    """Sequential reader over a binary file with its own buffer (fast for many tiny reads)."""

    def __init__(self, handle: BinaryIO, path: str) -> None:
        self._handle = handle
        self._path = path
        self._buf = b""
        self._pos = 0
        self._base = 0  # file offset of _buf[0]

    @property
    def offset(self) -> int:
        return self._base + self._pos

    def _fill(self, need: int) -> None:
        available = len(self._buf) - self._pos
        if available >= need:
            return
        chunk = self._handle.read(max(_READ_CHUNK, need - available))
        self._base += self._pos
        self._buf = self._buf[self._pos :] + chunk
        self._pos = 0
        if len(self._buf) < need:
            raise GGUFError(f"{self._path}: truncated GGUF header at byte {self.offset}")

    def read(self, size: int) -> bytes:
        self._fill(size)
        data = self._buf[self._pos : self._pos + size]
        self._pos += size
        return data

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        self._fill(size)
        (value,) = struct.unpack_from(fmt, self._buf, self._pos)
        self._pos += size
        return value

    def skip(self, size: int) -> None:
        available = len(self._buf) - self._pos
        if size <= available:
            self._pos += size
            return
        target = self.offset + size
        self._handle.seek(target)
        self._base, self._buf, self._pos = target, b"", 0

    def string(self) -> str:
        length = self.unpack("<Q")
        if length > _MAX_STRING:
            raise GGUFError(f"{self._path}: implausible string length {length} at byte {self.offset - 8}")
        return self.read(length).decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        for _index in range(count):
            length = self.unpack("<Q")
            if length > _MAX_STRING:
                raise GGUFError(f"{self._path}: implausible string length {length} at byte {self.offset - 8}")
            self.skip(length)


def _type_name(vtype: int, path: str, offset: int) -> str:
    try:
        return _TYPES[vtype][0]
    except KeyError:
        raise GGUFError(f"{path}: unknown GGUF value type {vtype} at byte {offset}") from None


def _read_value(cur: _Cursor, vtype: int, max_array_len: int, path: str) -> tuple[Any, dict[str, Any] | None]:
    """(value, array info or None). Arrays longer than max_array_len come back as a marker dict."""
    _type_name(vtype, path, cur.offset)
    if vtype == _STRING:
        return cur.string(), None
    if vtype != _ARRAY:
        fmt = _TYPES[vtype][1]
        if fmt is None:
            raise GGUFError(f"{path}: value of type {vtype} has no fixed size at byte {cur.offset}")
        return cur.unpack(fmt), None
    etype = cur.unpack("<I")
    count = cur.unpack("<Q")
    ename = _type_name(etype, path, cur.offset)
    if count > _MAX_COUNT or etype == _ARRAY:
        raise GGUFError(f"{path}: unsupported or corrupt array ({ename} x {count}) at byte {cur.offset}")
    info = {"element_type": ename, "length": count}
    if count > max_array_len:
        if etype == _STRING:
            cur.skip_strings(count)
        else:
            fmt = _TYPES[etype][1]
            if fmt is None:
                raise GGUFError(f"{path}: array of {ename} has no fixed element size at byte {cur.offset}")
            cur.skip(struct.calcsize(fmt) * count)
        return {"skipped_array": True, **info}, info
    values: list[Any] = []
    for _index in range(count):
        value, _info = _read_value(cur, etype, max_array_len, path)
        values.append(value)
    return values, info


def read_gguf_metadata(path: str | os.PathLike[str], max_array_len: int = DEFAULT_MAX_ARRAY_LEN) -> dict[str, Any]:
    """Read a GGUF file's header.

    Returns ``{"version", "tensor_count", "kv_count", "kv", "arrays", "header_bytes", "file_size"}``:
    ``kv`` maps keys to scalars and arrays of at most ``max_array_len`` elements; longer arrays are
    ``{"skipped_array": True, "element_type": ..., "length": N}``. ``arrays`` gives element type and
    length of every array. ``header_bytes`` is where the KV section ends (tensor infos follow).

    Raises GGUFError (a ValueError) when the file is not GGUF v2/v3 or the header is corrupt, and
    OSError when it cannot be read.
    """
    spath = os.fspath(path)
    with open(spath, "rb") as handle:
        file_size = os.fstat(handle.fileno()).st_size
        cur = _Cursor(handle, spath)
        try:
            magic = cur.read(4)
        except GGUFError:
            raise GGUFError(f"{spath}: not a GGUF file (only {file_size} bytes)") from None
        if magic != GGUF_MAGIC:
            raise GGUFError(f"{spath}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
        version = cur.unpack("<I")
        if version not in (2, 3):
            raise GGUFError(f"{spath}: unsupported GGUF version {version} (2 and 3 are supported)")
        tensor_count = cur.unpack("<Q")
        kv_count = cur.unpack("<Q")
        if kv_count > 1_000_000 or tensor_count > 10_000_000:
            raise GGUFError(f"{spath}: implausible header (kv_count {kv_count}, tensor_count {tensor_count})")
        kv: dict[str, Any] = {}
        arrays: dict[str, dict[str, Any]] = {}
        for _index in range(kv_count):
            key = cur.string()
            vtype = cur.unpack("<I")
            value, info = _read_value(cur, vtype, max_array_len, spath)
            kv[key] = value
            if info is not None:
                arrays[key] = info
        header_bytes = cur.offset
        tensors = _read_tensor_infos(cur, tensor_count, spath)
        alignment = kv.get("general.alignment", 32)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise GGUFError(f"{spath}: general.alignment {alignment!r} is not a power of two")
        data_offset = -(-cur.offset // alignment) * alignment
        for tensor in tensors:
            tensor["offset"] += data_offset  # absolute file offset, as llama.cpp's loader computes it
        return {
            "version": version,
            "tensor_count": tensor_count,
            "kv_count": kv_count,
            "kv": kv,
            "arrays": arrays,
            "header_bytes": header_bytes,
            "tensors": tensors,
            "data_offset": data_offset,
            "file_size": file_size,
        }


def _read_tensor_infos(cur: _Cursor, count: int, path: str) -> list[dict[str, Any]]:
    """The tensor infos that follow the KV section: name, type, dims, offset (relative to the data) and size."""
    tensors: list[dict[str, Any]] = []
    for _index in range(count):
        name = cur.string()
        n_dims = cur.unpack("<I")
        if n_dims > 8:
            raise GGUFError(f"{path}: tensor {name!r} has {n_dims} dimensions")
        dims = [cur.unpack("<Q") for _index in range(n_dims)]
        ggml_type = cur.unpack("<I")
        offset = cur.unpack("<Q")
        if ggml_type not in GGML_TYPE_BLOCKS:
            raise GGUFError(f"{path}: tensor {name!r} has an unknown ggml type {ggml_type}")
        type_name, block, block_bytes = GGML_TYPE_BLOCKS[ggml_type]
        elements = math.prod(dims)
        if dims and dims[0] % block:
            raise GGUFError(
                f"{path}: tensor {name!r} ({type_name}) has a row of {dims[0]} elements, not a multiple of {block}"
            )
        tensors.append(
            {"name": name, "type": type_name, "dims": dims, "offset": offset, "nbytes": elements // block * block_bytes}
        )
    return tensors


# --------------------------------------------------------------------------------------------------
# Memory estimate
# --------------------------------------------------------------------------------------------------


def _arch_value(kv: Mapping[str, Any], arch: str, suffix: str) -> Any:
    return kv.get(f"{arch}.{suffix}")


def _per_layer(value: Any, n_layer: int, name: str) -> list[int]:
    """A hyper-parameter that may be one number or a per-layer array."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        values = [int(v) for v in value]
        if len(values) != n_layer:
            raise GGUFError(f"{name} has {len(values)} entries for {n_layer} layers")
        return values
    if isinstance(value, dict):  # a skipped (very long) per-layer array
        raise GGUFError(f"{name} is a per-layer array too long to read with this max_array_len")
    return [int(value)] * n_layer


def _row_bytes(elements: int, cache_type: str) -> int:
    block, size = CACHE_TYPE_BLOCKS[cache_type]
    return math.ceil(elements / block) * size


def model_summary(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Architecture hyper-parameters that matter for memory, from read_gguf_metadata()'s result."""
    kv = meta["kv"]
    arch = kv.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise GGUFError("general.architecture is missing")
    n_layer = _arch_value(kv, arch, "block_count")
    n_embd = _arch_value(kv, arch, "embedding_length")
    head_count = _arch_value(kv, arch, "attention.head_count")
    if n_layer is None or n_embd is None or head_count is None:
        raise GGUFError(f"{arch}: block_count, embedding_length and attention.head_count are required for an estimate")
    n_layer, n_embd = int(n_layer), int(n_embd)
    n_head = _per_layer(head_count, n_layer, f"{arch}.attention.head_count")
    head_count_kv = _arch_value(kv, arch, "attention.head_count_kv")
    n_head_kv = (
        _per_layer(head_count_kv, n_layer, f"{arch}.attention.head_count_kv") if head_count_kv is not None else n_head
    )
    key_length = _arch_value(kv, arch, "attention.key_length")
    value_length = _arch_value(kv, arch, "attention.value_length")
    max_heads = max(n_head) if n_head else 0
    default_head_dim = n_embd // max_heads if max_heads else 0
    head_dim_k = int(key_length) if key_length is not None else default_head_dim
    head_dim_v = int(value_length) if value_length is not None else default_head_dim
    vocab = _arch_value(kv, arch, "vocab_size")
    if vocab is None:
        tokens = meta.get("arrays", {}).get("tokenizer.ggml.tokens")
        vocab = tokens["length"] if tokens else None
    context_length = _arch_value(kv, arch, "context_length")
    return {
        "architecture": arch,
        "name": kv.get("general.name"),
        "file_type": kv.get("general.file_type"),
        "n_layer": n_layer,
        "n_embd": n_embd,
        "n_head": max_heads,
        "n_head_kv": max(n_head_kv) if n_head_kv else 0,
        "n_head_kv_per_layer": n_head_kv,
        "head_dim_k": head_dim_k,
        "head_dim_v": head_dim_v,
        "n_vocab": int(vocab) if vocab is not None else None,
        "context_length": int(context_length) if context_length is not None else None,
    }


_SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
#: Input-layer tensors: llama.cpp keeps them on the CPU whatever -ngl says (llm_tensor_info: LLM_TENSOR_LAYER_INPUT).
_INPUT_TENSORS = ("token_embd.weight", "position_embd.weight", "token_types.weight", "per_layer_token_embd.weight")
_LAYER_RE = re.compile(r"^blk\.(\d+)\.")
#: Pinned staging buffers of a load without mmap (llama-model-loader.cpp load_all_data: 4 buffers of 1 MiB, or of
#: 64 MiB + 2 x the read alignment with direct I/O, here 4 KiB).
_STAGING_BYTES = {"none": 4 * MIB, "mlock": 4 * MIB, "dio": 4 * (64 * MIB + 2 * 4096)}


def split_shard(filename: str) -> tuple[int, int] | None:
    """(shard number, shard count) of a split GGUF name like ``model-00001-of-00003.gguf``, else None."""
    match = _SPLIT_RE.search(filename)
    return (int(match.group(1)), int(match.group(2))) if match else None


def effective_load_mode(load_mode: str, backend: str) -> str:
    """What ``--load-mode auto`` resolves to: mmap, unless a device cannot map (llama-model.cpp load_tensors).

    ggml-cuda sets ``mmap_support = type != IGPU``: on a Jetson (integrated GPU) auto means none.
    """
    if load_mode not in LOAD_MODES:
        raise ValueError(f"load_mode {load_mode!r} is not one of {', '.join(LOAD_MODES)}")
    if backend not in ("cuda", "cpu"):
        raise ValueError(f"backend {backend!r} is not cuda or cpu")
    if load_mode == "auto":
        return "none" if backend == "cuda" else "mmap"
    return load_mode


def weights_layout(
    meta: Mapping[str, Any], n_gpu_layers: int = -1, backend: str = "cuda", load_mode: str = "none"
) -> dict[str, Any]:
    """Where llama.cpp b11312 puts the weights and what each load mode holds in RAM besides them.

    From the tensor infos (names, offsets, sizes; nothing is read from the tensor data):

    * device: tensors of the offloaded layers (``blk.N`` with N >= n_layer + 1 - ngl) and of the output layer
      when it is offloaded; host: the input layer (``token_embd``, always on the CPU) and the layers left on the CPU.
    * duplicated: without ``output.weight`` (tied embeddings) the output layer is ``token_embd`` loaded a second
      time (TENSOR_DUPLICATED) into the output layer's buffer: a second copy when that is the GPU.
    * load modes (``use_mmap`` is mmap, mmap+mlock and auto where the devices can map; ``use_mlock`` mlock and
      mmap+mlock): without mmap the host tensors are read into their buffers (CUDA host memory, pinned) and the
      device tensors are streamed through small pinned staging buffers. With mmap the host tensors stay
      file-backed pages of the mapping and the device tensors are copied from it; after the load everything
      outside the span of the host tensors is unmapped. With mlock on a mapping, the lock grows from the start
      of the file to the end of each host tensor as it is loaded (llama_mlock::grow_to): device tensors inside
      that range are locked as a second copy until the load unmaps them, and those inside the span of the host
      tensors stay locked. mlock without mmap locks only host buffers, which are already pinned on CUDA.
    * page cache: every mode but dio reads the file through the page cache (clean, reclaimable, not counted).
    """
    mode = effective_load_mode(load_mode, backend)
    tensors = list(meta.get("tensors") or [])
    kv = meta["kv"]
    arch = kv.get("general.architecture")
    n_layer = int(kv.get(f"{arch}.block_count") or 0)
    ngl = n_layer + 1 if n_gpu_layers < 0 else n_gpu_layers
    i_gpu_start = max(n_layer + 1 - ngl, 0) if backend == "cuda" else n_layer + 2
    names = {tensor["name"] for tensor in tensors}
    tied = bool(tensors) and "output.weight" not in names and "token_embd.weight" in names
    output_on_gpu = n_layer >= i_gpu_start
    device: list[dict[str, Any]] = []
    host: list[dict[str, Any]] = []
    for tensor in tensors:
        name = tensor["name"]
        match = _LAYER_RE.match(name)
        layer = int(match.group(1)) if match else n_layer  # output, output_norm, rope_freqs ...: the output layer
        if name in _INPUT_TENSORS or layer < i_gpu_start:
            host.append(tensor)
        else:
            device.append(tensor)
    embd = next((t for t in tensors if t["name"] == "token_embd.weight"), None)
    duplicated = embd["nbytes"] if tied and embd is not None and output_on_gpu else 0
    device_bytes = sum(t["nbytes"] for t in device) + duplicated
    host_bytes = sum(t["nbytes"] for t in host)
    locked_extra = load_locked_extra = 0
    if mode == "mmap+mlock" and host and device:
        first = min(t["offset"] for t in host)
        last = max(t["offset"] + t["nbytes"] for t in host)
        locked_extra = sum(t["nbytes"] for t in device if t["offset"] < last and t["offset"] + t["nbytes"] > first)
        # during the load: [0, end of the last host tensor), the header and the device tensors before it included
        load_locked_extra = meta.get("data_offset", 0) + sum(t["nbytes"] for t in device if t["offset"] < last)
    staging = _STAGING_BYTES.get(mode, 0) if device else 0
    result: dict[str, Any] = {
        "load_mode": load_mode,
        "effective_load_mode": mode,
        "backend": backend,
        "tensors_known": bool(tensors),
        "tied_embeddings": tied,
        "device_weights_bytes": device_bytes,
        "host_weights_bytes": host_bytes,
        "duplicated_bytes": duplicated,
        "locked_extra_bytes": locked_extra,
        "load_locked_extra_bytes": load_locked_extra,
        "load_staging_bytes": staging,
        "page_cache_bytes": 0 if mode == "dio" else int(meta.get("file_size", 0)),
        "host_tensors": [t["name"] for t in host][:8],
    }
    return result


def estimate_memory(
    meta: Mapping[str, Any],
    file_size: int,
    ctx: int,
    parallel: int = 1,
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
    ubatch: int = 512,
    n_gpu_layers: int = -1,
    *,
    ctx_is_total: bool = True,
    flash_attn: bool = True,
    overhead_bytes: int = DEFAULT_OVERHEAD_BYTES,
    load_mode: str = "none",
    backend: str = "cuda",
    cache_ram_mib: int = 0,
    draft: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Estimate the RAM llama-server needs for a model (Jetson: CPU and GPU share the same memory).

    * weights: what weights_layout() says the load mode holds: the tensors on the device (plus the second copy
      of tied embeddings), the host tensors, and the locked extra copy of mmap+mlock. Without tensor infos (a
      header-only file) the file size.
    * KV cache: per layer, K = n_ctx_total x n_head_kv x head_dim_k and V = n_ctx_total x n_head_kv x
      head_dim_v elements, at the bytes per element of ``cache_type_k``/``cache_type_v`` (f16 2,
      q8_0 34/32, q4_0 18/32, f32 4). head_dim is embedding_length / head_count unless
      ``attention.key_length``/``value_length`` say otherwise. For uniform layers this is
      2 x n_layer x n_ctx_total x n_head_kv x head_dim x bytes.
    * n_ctx_total: with ``ctx_is_total`` (the default, llama-server's ``-c`` in recent llama.cpp) the
      ``--parallel`` slots share ``ctx`` cells, each slot gets ctx / parallel; otherwise ``ctx`` is per
      slot and the cache holds ctx x parallel cells. ``ctx=0`` means the model's training context
      (what llama-server does for ``-c 0``). No rounding up (llama.cpp may pad to a multiple of 256).
    * compute buffer (heuristic): ubatch x (n_embd + n_vocab) x 4 bytes, the F32 hidden state plus the
      logits of one micro-batch; this matches llama.cpp's CUDA compute buffer for large-vocabulary
      models within a few MiB. Without flash attention add the F32 attention scores,
      n_head x ubatch x n_ctx_per_slot x 4.
    * prompt cache (llama-server ``--cache-ram``, tools/server server_prompt_cache): ``cache_ram_mib`` MiB when
      positive, nothing when 0, and with -1 (no size limit) at most n_ctx tokens of slot state: the KV cache size
      again (plus the draft's).
    * draft: the result of this function for the draft model (``cache_ram_mib=0``, ``overhead_bytes=0``); its
      ``total_bytes`` (weights, KV, compute) is added.
    * overhead: a fixed allowance (CUDA context, cuBLAS workspace, host buffers, the server).

    ``total_bytes`` is the steady state after the load; ``load_peak_bytes`` what the load itself holds (weights,
    the locked extra of mmap+mlock during the load, the staging buffers); ``fit_bytes`` the larger of the two.
    """
    for name, cache_type in (("cache_type_k", cache_type_k), ("cache_type_v", cache_type_v)):
        if cache_type not in CACHE_TYPE_BLOCKS:
            raise ValueError(f"{name} {cache_type!r} is not one of {', '.join(CACHE_TYPE_BLOCKS)}")
    if parallel < 1 or ubatch < 1 or ctx < 0 or file_size < 0 or cache_ram_mib < -1:
        raise ValueError("parallel and ubatch must be >= 1, ctx and file_size >= 0, cache_ram_mib >= -1")
    model = model_summary(meta)
    layout = weights_layout(meta, n_gpu_layers, backend, load_mode)
    warnings: list[str] = []
    train_ctx = model["context_length"]
    if ctx == 0:
        if not train_ctx:
            raise GGUFError("ctx=0 (the model's context) but the model has no context_length")
        ctx = train_ctx
        warnings.append(f"ctx 0 uses the model's training context {train_ctx}; set ctx_size explicitly")
    n_ctx_total = ctx if ctx_is_total else ctx * parallel
    n_ctx_per_slot = n_ctx_total // parallel
    if train_ctx and n_ctx_per_slot > train_ctx:
        warnings.append(f"context per slot {n_ctx_per_slot} exceeds the model's training context {train_ctx}")
    if cache_type_v not in ("f16", "f32", "bf16") and not flash_attn:
        warnings.append(f"a quantized V cache ({cache_type_v}) needs flash attention in llama.cpp")

    kv_k = sum(_row_bytes(heads * model["head_dim_k"], cache_type_k) for heads in model["n_head_kv_per_layer"])
    kv_v = sum(_row_bytes(heads * model["head_dim_v"], cache_type_v) for heads in model["n_head_kv_per_layer"])
    kv_per_cell = kv_k + kv_v
    kv_k_bytes = kv_k * n_ctx_total
    kv_v_bytes = kv_v * n_ctx_total
    kv_bytes = kv_k_bytes + kv_v_bytes

    n_vocab = model["n_vocab"] or 0
    if not n_vocab:
        warnings.append("vocabulary size unknown: the compute buffer estimate leaves out the logits")
    compute = ubatch * (model["n_embd"] + n_vocab) * 4
    if not flash_attn:
        compute += model["n_head"] * ubatch * n_ctx_per_slot * 4
    if layout["tensors_known"]:
        weights = layout["device_weights_bytes"] + layout["host_weights_bytes"] + layout["locked_extra_bytes"]
        load_weights = weights - layout["locked_extra_bytes"] + layout["load_locked_extra_bytes"]
    else:
        weights = load_weights = file_size
        warnings.append("no tensor infos in the file: weights counted as the file size")
    draft_bytes = int(draft["total_bytes"]) if draft else 0
    draft_kv = int(draft["kv_cache_bytes"]) if draft else 0
    if cache_ram_mib > 0:
        prompt_cache = cache_ram_mib * MIB
    elif cache_ram_mib < 0:
        prompt_cache = kv_bytes + draft_kv
    else:
        prompt_cache = 0
    total = weights + kv_bytes + compute + prompt_cache + draft_bytes + overhead_bytes
    load_peak = load_weights + layout["load_staging_bytes"] + overhead_bytes
    result: dict[str, Any] = {
        "weights_bytes": weights,
        "file_bytes": file_size,
        "kv_cache_bytes": kv_bytes,
        "kv_k_bytes": kv_k_bytes,
        "kv_v_bytes": kv_v_bytes,
        "kv_bytes_per_cell": kv_per_cell,
        "compute_bytes": compute,
        "prompt_cache_bytes": prompt_cache,
        "draft_bytes": draft_bytes,
        "overhead_bytes": overhead_bytes,
        "total_bytes": total,
        "load_peak_bytes": load_peak,
        "fit_bytes": max(total, load_peak),
        "layout": layout,
        "n_ctx_total": n_ctx_total,
        "n_ctx_per_slot": n_ctx_per_slot,
        "parallel": parallel,
        "ctx_is_total": ctx_is_total,
        "cache_type_k": cache_type_k,
        "cache_type_v": cache_type_v,
        "ubatch": ubatch,
        "flash_attn": flash_attn,
        "n_gpu_layers": n_gpu_layers,
        "cache_ram_mib": cache_ram_mib,
        "model": {key: value for key, value in model.items() if key != "n_head_kv_per_layer"},
        "warnings": warnings,
    }
    for key in ("weights", "kv_cache", "compute", "prompt_cache", "draft", "overhead", "total", "load_peak", "fit"):
        result[f"{key}_mib"] = round(result[f"{key}_bytes"] / MIB, 1)
    return result
