#!/usr/bin/env bash
# tests/gpu/check.sh: the GPU check, by hand, on a machine with an NVIDIA GPU, its driver and the CUDA toolkit
# (nvcc, cmake, make or ninja, gcc). Not part of `make test`. It needs no network.
#
#   1. builds the pinned llama.cpp with CUDA through the product's own recipe (roles/llama_cpp_build/files/
#      build-llama.sh, bare: the same script the image's Dockerfile runs);
#   2. starts llama-server on the tiny GGUF with every layer on the GPU (-ngl all), keeps its log, and runs the
#      gate's backend check on it (tests/gpu/backend_check.py = jetson_llm.fleet.llama_backend): it must PASS;
#   3. starts it again with the GPU hidden (CUDA_VISIBLE_DEVICES=""): the same check must FAIL, naming the cause;
#   4. prints the load lines and the tokens/s of one completion on the GPU and on the CPU.
#
# On a machine without network (a lent GPU machine), prepare a bundle here first (source + model, about 23 MB):
#   echo /tests/gpu/.bundle/ >> .git/info/exclude; tests/gpu/check.sh --prepare tests/gpu/.bundle   # needs the venv
# then there (the device tool: carry ["tests/gpu/.bundle"]):
#   tests/gpu/check.sh --bundle tests/gpu/.bundle
# Environment: GPU_CHECK_ARCHS (CMAKE_CUDA_ARCHITECTURES, default native; 90 for an H200, 87 for Orin),
# GPU_CHECK_JOBS (0 = from free memory), GPU_CHECK_TIMEOUT (whole script, s, default 540), GPU_CHECK_WORK
# (default /tmp/jlf-gpu-check; the build dir stays there, so a rerun only relinks), OUT (logs and results).
# Exit status: 0 all as expected, 1 a check failed, 2 usage or missing tools, 124 timed out.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TIMEOUT="${GPU_CHECK_TIMEOUT:-540}"
if [[ -z "${_GPU_CHECK_INNER:-}" ]]; then
    exec timeout -k 10 "${TIMEOUT}" env _GPU_CHECK_INNER=1 bash "$0" "$@"
fi
WORK="${GPU_CHECK_WORK:-/tmp/jlf-gpu-check}"
RESULTS="${OUT:-${WORK}/results}"
ARCHS="${GPU_CHECK_ARCHS:-native}"
JOBS="${GPU_CHECK_JOBS:-0}"
PORT="${GPU_CHECK_PORT:-18480}"
REF=b11312
PY="$(command -v python3)"
[[ -x "${REPO}/.venv/bin/python" ]] && PY="${REPO}/.venv/bin/python"
say() { printf '\n== %s\n' "$*"; }
die() { echo "check.sh: $*" >&2; exit 2; }

mode=run bundle=""
while (($#)); do
    case "$1" in
        --prepare) mode=prepare; bundle="${2:?--prepare needs a directory}"; shift 2 ;;
        --bundle) bundle="${2:?--bundle needs a directory}"; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1'" ;;
    esac
done

make_model() {  # tiny_gguf.py with head dim 64 (n_head 4 of 256), 4 layers (12 MB): the GPU's kernels, tiny weights
    "${PY}" - "$1" <<'PYTHON'
import sys
sys.path.insert(0, "tests/fixtures")
from tiny_gguf import write_tiny_llama_gguf
write_tiny_llama_gguf(sys.argv[1], n_layer=4, n_embd=256, n_head=4, n_head_kv=2, n_ff=704)
PYTHON
}

cd "${REPO}"
if [[ "${mode}" == prepare ]]; then
    mkdir -p "${bundle}"
    mirror="$("${PY}" -c 'import sys; sys.path.insert(0, "tests/fixtures"); import llama_src
print(llama_src.ensure_llama_cpp_mirror(llama_src.DEFAULT_CACHE).repo)')"
    git --git-dir "${mirror}" archive --format=tar.gz --prefix=src/ -o "${bundle}/llama.cpp-${REF}.tar.gz" "${REF}" \
        -- . ':(exclude)models' ':(exclude)docs' ':(exclude)media' ':(exclude)benches'
    git --git-dir "${mirror}" rev-parse "${REF}^{commit}" > "${bundle}/commit"
    make_model "${bundle}/tiny.gguf"
    du -sh "${bundle}"/*
    exit 0
fi

mkdir -p "${WORK}" "${RESULTS}"
say "source"
if [[ -n "${bundle}" ]]; then
    [[ -f "${WORK}/src/CMakeLists.txt" ]] || tar -C "${WORK}" -xzf "${bundle}/llama.cpp-${REF}.tar.gz"
    commit="$(cat "${bundle}/commit")"
    model="${bundle}/tiny.gguf"
else
    mirror="$("${PY}" -c 'import sys; sys.path.insert(0, "tests/fixtures"); import llama_src
print(llama_src.ensure_llama_cpp_mirror(llama_src.DEFAULT_CACHE).repo)')"
    [[ -f "${WORK}/src/CMakeLists.txt" ]] || git --git-dir "${mirror}" archive --prefix=src/ "${REF}" | tar -C "${WORK}" -x
    commit="$(git --git-dir "${mirror}" rev-parse "${REF}^{commit}")"
    model="${WORK}/tiny.gguf"
    [[ -f "${model}" ]] || make_model "${model}"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

say "build (CUDA, archs ${ARCHS}) with roles/llama_cpp_build/files/build-llama.sh"
started=${SECONDS}
bash roles/llama_cpp_build/files/build-llama.sh --src "${WORK}/src" --build "${WORK}/build" --out "${WORK}/out" \
    --backend cuda --cuda-archs "${ARCHS}" --jobs "${JOBS}" --ccache-dir "${WORK}/ccache" \
    --ref "${REF}" --commit "${commit}" --targets "llama-server" > "${RESULTS}/build.log" 2>&1 \
    || { tail -40 "${RESULTS}/build.log"; echo "check.sh: the build failed (log: ${RESULTS}/build.log)" >&2; exit 1; }
build_s=$((SECONDS - started))
grep -E '^(version|build-llama.sh: (jobs|compiled))' "${RESULTS}/build.log" || true

server_pid=""
stop_server() { [[ -z "${server_pid}" ]] || { kill "${server_pid}" 2> /dev/null || true; wait "${server_pid}" 2> /dev/null || true; server_pid=""; }; }
trap stop_server EXIT

# serve NAME [ENV...]: start llama-server with every layer on the GPU, wait for /health, run one completion,
# stop it. Leaves NAME.log (the server's log) and NAME.json (the completion) in RESULTS.
serve() {
    local name="$1"; shift
    env "$@" "${WORK}/out/bin/llama-server" -m "${model}" --host 127.0.0.1 --port "${PORT}" -ngl all -c 2048 \
        --no-warmup > "${RESULTS}/${name}.log" 2>&1 &
    server_pid=$!
    local tries=0
    until curl -fsS "http://127.0.0.1:${PORT}/health" > /dev/null 2>&1; do
        kill -0 "${server_pid}" 2> /dev/null || { tail -20 "${RESULTS}/${name}.log"; echo "check.sh: llama-server (${name}) exited" >&2; return 1; }
        ((++tries < 120)) || { echo "check.sh: llama-server (${name}) not healthy in 60 s" >&2; return 1; }
        sleep 0.5
    done
    curl -fsS "http://127.0.0.1:${PORT}/completion" -H 'Content-Type: application/json' \
        -d '{"prompt": "the jetson orin model", "n_predict": 128, "ignore_eos": true, "temperature": 0}' \
        > "${RESULTS}/${name}.json"
    stop_server
}
tokens_per_s() { "${PY}" -c 'import json, sys; t = json.load(open(sys.argv[1]))["timings"]
print(f"{t[\"predicted_per_second\"]:.1f} tokens/s generated ({t[\"predicted_n\"]}), {t[\"prompt_per_second\"]:.1f} tokens/s prompt")' "$1"; }

status=0
say "GPU: every layer on the GPU; the backend check must pass"
serve gpu
grep -E 'ggml_cuda_init|Device [0-9]+:|using device|offloaded|model buffer size' "${RESULTS}/gpu.log" || true
if "${PY}" tests/gpu/backend_check.py "${RESULTS}/gpu.log" > "${RESULTS}/gpu-backend.json"; then
    echo "PASS: backend check on the GPU log"
else
    rc=$?; status=1
    [[ ${rc} == 2 ]] && echo "TODO: the gate's check (jetson_llm.fleet.llama_backend) is missing" >&2
    echo "FAIL: the backend check refused the GPU log" >&2
fi
cat "${RESULTS}/gpu-backend.json"

say "GPU hidden (CUDA_VISIBLE_DEVICES=\"\"): the backend check must fail"
serve cpu CUDA_VISIBLE_DEVICES=
grep -E 'ggml_cuda_init|no usable GPU|using device|offloaded|model buffer size' "${RESULTS}/cpu.log" || true
if "${PY}" tests/gpu/backend_check.py "${RESULTS}/cpu.log" > "${RESULTS}/cpu-backend.json"; then
    status=1; echo "FAIL: the backend check accepted a server with the GPU hidden" >&2
elif [[ $? == 1 ]]; then
    echo "PASS: backend check refused the CPU fallback"
else
    status=1
fi
cat "${RESULTS}/cpu-backend.json"

say "throughput (one completion of 128 tokens, tiny model)"
gpu_tps="$(tokens_per_s "${RESULTS}/gpu.json")"
cpu_tps="$(tokens_per_s "${RESULTS}/cpu.json")"
echo "GPU: ${gpu_tps}"
echo "CPU: ${cpu_tps}"
echo "build: ${build_s} s (archs ${ARCHS})"
printf '{"build_s": %s, "archs": "%s", "gpu": "%s", "cpu": "%s", "status": %s}\n' \
    "${build_s}" "${ARCHS}" "${gpu_tps}" "${cpu_tps}" "${status}" > "${RESULTS}/summary.json"
exit "${status}"
