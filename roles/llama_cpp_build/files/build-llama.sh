#!/usr/bin/env bash
# build-llama.sh: the one build recipe of jetson-llm-fleet's llama.cpp (role llama_cpp_build).
#
# The image's Dockerfile runs it in the builder stage; it also runs bare on a host (a GPU machine, a Jetson):
#   build-llama.sh --src ~/llama.cpp --build /tmp/llama-build --out /tmp/llama-out --backend cuda --cuda-archs 87
# It configures, compiles, installs bin/<targets> and share/build-config.txt + share/build-info.txt under --out,
# then checks that the product is what was asked for (backend symbols, --version). It never installs anything:
# a missing tool stops it at once with the tool's name and the package that brings it (the image build runs with
# --network=none, so an apt step could not work there anyway).
#
# Options (defaults in brackets):
#   --src DIR          llama.cpp source tree [/src]
#   --build DIR        CMake build directory [/build]
#   --out DIR          install prefix: DIR/bin, DIR/share [/out]
#   --backend B        cpu | cuda [cpu]
#   --cuda-archs L     CMAKE_CUDA_ARCHITECTURES, a CMake list ("87", "72;87", "native") [87]
#   --jobs N           parallel compile jobs; 0 = from MemAvailable (see below) [0]
#   --ccache-dir DIR   compiler cache (CCACHE_DIR) [$CCACHE_DIR]; without ccache installed the build runs uncached
#   --targets "T ..."  CMake targets built and installed ["llama-server llama-bench"]
#   --cmake-flag F     one extra CMake argument, e.g. -DGGML_CUDA_FA_ALL_QUANTS=ON (repeatable)
#   --ref R --commit C --flags-digest D   recorded in build-config.txt; a bNNNN ref sets LLAMA_BUILD_NUMBER
#   --base-image NAME  named in the message when a tool is missing (the image to fix)
#   --check-tools      only check the tools, then exit (0: all there, 3: some missing)
#   --collect-libs DIR only lay out under DIR the shared libraries the runtime image takes from this builder, then
#                      exit: libgomp.so.1 (OpenMP, from the compiler) in DIR/usr/local/lib/llama.cpp and, for
#                      --backend cuda, cudart, cublas and cublasLt (file + soname link) in DIR/usr/local/cuda/lib64.
#                      Owner root, modes 0755/0644, every mtime 2000-01-01: the same toolkit gives the same bytes,
#                      so the image layer made from DIR is identical across llama.cpp refs and flags.
#   --print-jobs       only print the job count --jobs 0 would choose, then exit
#
# Jobs from memory: what is free now (MemAvailable: a build host may be serving a model), less a reserve, divided
# by the peak memory of one compile job: nvcc (cicc + ptxas on ggml-cuda's fattn/mmq template instances) is the
# heavy one, the C++ compiler needs far less; capped at the CPU count, at least 1. An Orin NX 16GB (15.3 GiB,
# about 13.5 GiB available when idle) gets (13.5 - 1) / 3 = 4 CUDA jobs, 2-3 while it serves a 3B model.
# The numbers can be changed through the environment (LLAMA_BUILD_JOB_MIB_CUDA, LLAMA_BUILD_JOB_MIB_CXX,
# LLAMA_BUILD_RESERVE_MIB); LLAMA_BUILD_MEMINFO and LLAMA_BUILD_NPROC exist for tests.
set -euo pipefail

JOB_MIB_CUDA="${LLAMA_BUILD_JOB_MIB_CUDA:-3072}"  # per nvcc job (llama.cpp#13375: OOM-killed at -j RAM/2.5 GiB)
JOB_MIB_CXX="${LLAMA_BUILD_JOB_MIB_CXX:-1024}"    # per g++ job (largest TUs: llama-model.cpp, server.cpp)
RESERVE_MIB="${LLAMA_BUILD_RESERVE_MIB:-1024}"    # left to the rest of the system
MEMINFO="${LLAMA_BUILD_MEMINFO:-/proc/meminfo}"

src=/src build=/build out=/out backend=cpu cuda_archs=87 jobs=0 ccache_dir="${CCACHE_DIR:-}"
targets="llama-server llama-bench" ref="" commit="" flags_digest="" base_image="" mode=build collect_dir=""
cmake_flags=()

die() { echo "build-llama.sh: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

while (($#)); do
    case "$1" in
        --src | --build | --out | --backend | --cuda-archs | --jobs | --ccache-dir | --targets | --cmake-flag | \
            --ref | --commit | --flags-digest | --base-image)
            (($# >= 2)) || die "$1 needs a value"
            case "$1" in
                --src) src="$2" ;; --build) build="$2" ;; --out) out="$2" ;; --backend) backend="$2" ;;
                --cuda-archs) cuda_archs="$2" ;; --jobs) jobs="$2" ;; --ccache-dir) ccache_dir="$2" ;;
                --targets) targets="$2" ;; --cmake-flag) cmake_flags+=("$2") ;; --ref) ref="$2" ;;
                --commit) commit="$2" ;; --flags-digest) flags_digest="$2" ;; --base-image) base_image="$2" ;;
            esac
            shift 2 ;;
        --check-tools) mode=check-tools; shift ;;
        --collect-libs)
            (($# >= 2)) || die "$1 needs a value"
            mode=collect-libs collect_dir="$2"; shift 2 ;;
        --print-jobs) mode=print-jobs; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (--help lists the options)" ;;
    esac
done

case "${backend}" in cpu | cuda) ;; *) die "--backend must be cpu or cuda, not '${backend}'" ;; esac
[[ "${jobs}" =~ ^[0-9]+$ ]] || die "--jobs must be a whole number (0 = from memory), not '${jobs}'"
arch='[0-9]+[af]?(-real|-virtual)?'
[[ "${cuda_archs}" =~ ^(${arch}(;${arch})*|native|all|all-major)$ ]] \
    || die "--cuda-archs must be a CMake list of compute capabilities like '87' or '72;87' (or native, all, all-major), not '${cuda_archs}'"
read -r -a target_list <<< "${targets}"
((${#target_list[@]})) || die "--targets is empty"

# nvcc: on PATH, else in $CUDA_HOME/bin (JetPack images do not put /usr/local/cuda/bin on PATH).
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
if [[ "${backend}" == cuda ]] && ! command -v nvcc > /dev/null && [[ -x "${cuda_home}/bin/nvcc" ]]; then
    export PATH="${cuda_home}/bin:${PATH}"
fi

check_tools() {
    # tool:package (Debian/Ubuntu). git and ccache are optional: without git the commit comes from --commit,
    # without ccache every build compiles everything.
    local pairs=(cmake:cmake make:make gcc:gcc g++:g++ readelf:binutils nm:binutils) pair missing=() packages=()
    [[ "${backend}" == cuda ]] && pairs+=(nvcc:cuda-nvcc)
    for pair in "${pairs[@]}"; do
        if ! command -v "${pair%%:*}" > /dev/null; then
            missing+=("${pair%%:*}")
            [[ " ${packages[*]} " == *" ${pair#*:} "* ]] || packages+=("${pair#*:}")
        fi
    done
    if ((${#missing[@]})); then
        {
            echo "build-llama.sh: missing build tools: ${missing[*]} (packages: ${packages[*]}; PATH=${PATH})."
            echo "This recipe installs nothing (the image build runs with --network=none). Fix the builder base image"
            echo "${base_image:+${base_image} }(llama_cpp_build_base_image): build one FROM it that installs them, or point"
            echo "llama_cpp_build_base_image at an image that has them."
            [[ "${backend}" == cuda ]] && echo "For CUDA the image needs the CUDA toolkit (nvcc) for the board's JetPack."
        } >&2
        return 3
    fi
    local optional=()
    command -v git > /dev/null || optional+=("git (commit from --commit only)")
    command -v ccache > /dev/null || optional+=("ccache (no compiler cache: every build compiles everything)")
    ((${#optional[@]} == 0)) || echo "build-llama.sh: optional tools absent: ${optional[*]}" >&2
    return 0
}

mem_available_mib() {
    local kib
    kib="$(awk '$1 == "MemAvailable:" {print $2; exit}' "${MEMINFO}" 2> /dev/null || true)"
    # Kernels before 3.14 have no MemAvailable: free + page cache is its old approximation.
    [[ -n "${kib}" ]] || kib="$(awk '$1 ~ /^(MemFree|Cached):$/ {s += $2} END {print s + 0}' "${MEMINFO}" 2> /dev/null || echo 0)"
    echo $((kib / 1024))
}

choose_jobs() {
    if ((jobs > 0)); then
        echo "${jobs}"
        echo "build-llama.sh: jobs: ${jobs} (asked for)" >&2
        return
    fi
    local available per cpus n
    available="$(mem_available_mib)"
    per=$([[ "${backend}" == cuda ]] && echo "${JOB_MIB_CUDA}" || echo "${JOB_MIB_CXX}")
    cpus="${LLAMA_BUILD_NPROC:-$(nproc 2> /dev/null || echo 1)}"
    n=$(((available - RESERVE_MIB) / per))
    ((n <= cpus)) || n="${cpus}"
    ((n >= 1)) || n=1
    echo "${n}"
    echo "build-llama.sh: jobs: ${n} (MemAvailable ${available} MiB - ${RESERVE_MIB} MiB reserve, ${per} MiB per ${backend} job, ${cpus} CPUs)" >&2
}

# The runtime libraries (see --collect-libs). A library is found by its soname link (libcublas.so.12 ->
# libcublas.so.12.6.4.1 in JetPack; the PyPI wheels ship libcublas.so.13 as a file): the file is copied under its
# own name and the soname link is made next to it.
collect_libs() {
    local dest="$1" libdir gomp name dir found real soname
    [[ -n "${dest}" && "${dest}" == /* ]] || die "--collect-libs needs an absolute directory, not '${dest}'"
    rm -rf "${dest}"
    libdir="${dest}/usr/local/lib/llama.cpp"
    mkdir -p "${libdir}"
    gomp="$(gcc -print-file-name=libgomp.so.1 2> /dev/null || true)"
    [[ "${gomp}" == /* && -e "${gomp}" ]] || gomp="$(ldconfig -p 2> /dev/null | awk '$1 == "libgomp.so.1" {print $NF; exit}')"
    [[ -n "${gomp}" && -e "${gomp}" ]] || die "no libgomp.so.1 in the builder (package libgomp1): llama.cpp's OpenMP needs it"
    cp -L "${gomp}" "${libdir}/libgomp.so.1"
    if [[ "${backend}" == cuda ]]; then
        mkdir -p "${dest}/usr/local/cuda/lib64"
        for name in libcudart libcublas libcublasLt; do
            found=""
            for dir in "${cuda_home}/lib64" "${cuda_home}"/targets/*/lib; do
                for candidate in "${dir}/${name}.so."*; do
                    [[ "${candidate##*/}" =~ ^${name}\.so\.[0-9]+$ && -e "${candidate}" ]] || continue
                    found="${candidate}"; break 2
                done
            done
            [[ -n "${found}" ]] || die "no ${name}.so.<major> in ${cuda_home}/lib64 or ${cuda_home}/targets/*/lib: is the CUDA toolkit complete?"
            real="$(readlink -f "${found}")"
            soname="$(readelf -d "${real}" | awk '/SONAME/ {gsub(/[][]/, "", $NF); print $NF}')"
            cp -L "${real}" "${dest}/usr/local/cuda/lib64/${real##*/}"
            [[ -z "${soname}" || "${soname}" == "${real##*/}" ]] || ln -s "${real##*/}" "${dest}/usr/local/cuda/lib64/${soname}"
            [[ "${soname:-${real##*/}}" == "${found##*/}" || -e "${dest}/usr/local/cuda/lib64/${found##*/}" ]] \
                || ln -s "${real##*/}" "${dest}/usr/local/cuda/lib64/${found##*/}"
        done
    fi
    find "${dest}" -type d -exec chmod 0755 {} +
    find "${dest}" -type f -exec chmod 0644 {} +
    chown -R -h 0:0 "${dest}" 2> /dev/null || true
    find "${dest}" -exec touch -h -d '2000-01-01 00:00:00 UTC' {} +
    (cd "${dest}" && find . -mindepth 1 | LC_ALL=C sort | while read -r path; do
        if [[ -L "${path}" ]]; then echo "${path#./} -> $(readlink "${path}")"; elif [[ -f "${path}" ]]; then echo "${path#./} $(wc -c < "${path}")"; fi
    done)
}

case "${mode}" in
    check-tools) check_tools; exit ;;
    collect-libs) collect_libs "${collect_dir}"; exit ;;
    print-jobs) choose_jobs; exit ;;
esac

check_tools || exit
njobs="$(choose_jobs)"
[[ -f "${src}/CMakeLists.txt" ]] || die "no llama.cpp source at --src ${src} (no CMakeLists.txt)"

# Build number from a bNNNN ref (CMake would otherwise count the commits of a possibly shallow clone); commit from
# --commit, else CMake asks git when the tree has its .git (the index refresh keeps ggml from calling a copied tree
# "-dirty"), else "unknown".
number=""
case "${ref}" in b[0-9]*) number="${ref#b}"; number="${number%%[!0-9]*}" ;; esac
if [[ -e "${src}/.git" ]] && command -v git > /dev/null; then git -C "${src}" update-index -q --refresh || true; fi

ccache=OFF
if command -v ccache > /dev/null; then
    ccache=ON
    [[ -z "${ccache_dir}" ]] || export CCACHE_DIR="${ccache_dir}"
    export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-2G}"
fi

args=(
    -S "${src}" -B "${build}"
    -DCMAKE_BUILD_TYPE=Release
    -DGGML_NATIVE=OFF
    -DBUILD_SHARED_LIBS=OFF
    "-DGGML_CCACHE=${ccache}"
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_APP=OFF
    -DLLAMA_USE_PREBUILT_UI=OFF
    -DLLAMA_OPENSSL=OFF
)
if [[ "${backend}" == cuda ]]; then
    nvcc --version
    args+=(-DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${cuda_archs}" -DGGML_CUDA_NCCL=OFF)
fi
args+=("${cmake_flags[@]}")
[[ -z "${number}" ]] || args+=("-DLLAMA_BUILD_NUMBER=${number}")
[[ -z "${commit}" ]] || args+=("-DLLAMA_BUILD_COMMIT=${commit:0:9}")

cmake "${args[@]}"
want=$([[ "${backend}" == cuda ]] && echo ON || echo OFF)
if [[ "${backend}" == cuda ]] || grep -q '^GGML_CUDA:BOOL=' "${build}/CMakeCache.txt"; then
    grep -qx "GGML_CUDA:BOOL=${want}" "${build}/CMakeCache.txt" \
        || die "CMake cache disagrees with backend ${backend} (GGML_CUDA is not ${want})"
fi
[[ "${ccache}" == OFF ]] || ccache --zero-stats > /dev/null
started=${SECONDS}
cmake --build "${build}" --config Release -j "${njobs}" --target "${target_list[@]}"
echo "build-llama.sh: compiled in $((SECONDS - started)) s with ${njobs} jobs"
[[ "${ccache}" == OFF ]] || ccache --show-stats

mkdir -p "${out}/bin" "${out}/share"
for target in "${target_list[@]}"; do
    install -m 0755 "${build}/bin/${target}" "${out}/bin/${target}"
done
{
    echo "ref: ${ref:-unknown}"
    echo "flags_digest: ${flags_digest:-none}"
    echo "backend: ${backend}"
    echo "targets: ${target_list[*]}"
    grep -E '^(CMAKE_BUILD_TYPE|GGML_[A-Z0-9_]+|LLAMA_[A-Z0-9_]+|BUILD_SHARED_LIBS|CMAKE_CUDA_(ARCHITECTURES|COMPILER)):' \
        "${build}/CMakeCache.txt" | sort
} > "${out}/share/build-config.txt"

# Verification (no GPU needed): the binary carries the backend its labels will claim (the static build links ggml's
# backends in, so their registration functions are in llama-server's symbol table), its dynamic libraries are
# recorded, and --version runs. libcuda.so.1 is the driver (mounted by the NVIDIA runtime on a Jetson): where the
# host has none, --version runs against the toolkit's stub.
server="${out}/bin/llama-server"
[[ -x "${server}" ]] || die "llama-server is not among --targets: nothing to verify"
symbols="$(nm "${server}")"
grep -q ' T ggml_backend_cpu_reg$' <<< "${symbols}" \
    || die "cannot read llama-server's symbol table (stripped?): backend not verifiable"
if [[ "${backend}" == cuda ]]; then
    grep -q ' T ggml_backend_cuda_reg$' <<< "${symbols}" \
        || die "llama-server has no CUDA backend (ggml_backend_cuda_reg missing): CPU-only build"
elif grep -q ' T ggml_backend_cuda_reg$' <<< "${symbols}"; then
    die "llama-server contains the CUDA backend but this build is labelled cpu"
fi
library_path="${LD_LIBRARY_PATH:-}"
libraries="$(ldd "${server}" 2>&1 || true)"  # whole, not piped into grep -q: pipefail + SIGPIPE would say "found"
if [[ "${backend}" == cuda && "${libraries}" == *"libcuda.so.1 => not found"* ]]; then
    stubs="$(mktemp -d)"
    trap 'rm -rf "${stubs}"' EXIT
    toolkit="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
    for stub in "${cuda_home}/lib64/stubs/libcuda.so" "${cuda_home}"/targets/*/lib/stubs/libcuda.so \
        "${toolkit}/lib64/stubs/libcuda.so" "${toolkit}"/targets/*/lib/stubs/libcuda.so; do
        if [[ -e "${stub}" ]]; then ln -sf "$(readlink -f "${stub}")" "${stubs}/libcuda.so.1"; break; fi
    done
    [[ -e "${stubs}/libcuda.so.1" ]] || die "no libcuda.so.1 and no driver stub (lib64/stubs/libcuda.so in ${cuda_home} or ${toolkit}): cannot run --version"
    library_path="${stubs}${library_path:+:${library_path}}"
    echo "build-llama.sh: no CUDA driver here: --version runs against the stub ${stub}" >&2
fi
LD_LIBRARY_PATH="${library_path}" "${server}" --version > "${out}/share/build-info.txt" 2>&1 \
    || { cat "${out}/share/build-info.txt" >&2; die "llama-server --version failed"; }
grep -q '^version: ' "${out}/share/build-info.txt" || die "llama-server --version printed no 'version:' line"
readelf -d "${server}" | awk '/NEEDED/ {gsub(/[][]/, "", $NF); print "needed: " $NF}' >> "${out}/share/build-config.txt"
cat "${out}/share/build-info.txt" "${out}/share/build-config.txt"
