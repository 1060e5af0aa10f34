#!/usr/bin/env bash
# Builds the C++ core with AddressSanitizer + UndefinedBehaviorSanitizer and runs
# the kernel tests against it at every SIMD level (GRADVIS_SIMD=scalar, avx2, and
# unset: the CPU's best). Fails if a test fails or a sanitizer reports anything.
#
#   tools/sanitize.sh           all kernel tests at the three levels
#   tools/sanitize.sh --quick   a short subset (CI)
#   tools/sanitize.sh --quick --build   only the quick build (CI starts it early, beside
#                                       its installs; the later --quick run finds it done)
#
# The sanitizer runtimes must be loaded before Python: LD_PRELOAD names libasan
# and libstdc++ (else ASan's interceptors miss the C++ allocations of the
# module). Reports go to build/sanitize*/logs/ and are printed at the end; pytest
# runs with -s so that nothing a child process prints is swallowed.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
build_only=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --build) build_only=1 ;;
    *) echo "usage: tools/sanitize.sh [--quick] [--build]" >&2; exit 2 ;;
  esac
done

# --quick instruments the kernels only (the pybind11 bindings are most of the
# build time; ASan still tracks their allocations through its interceptors).
if [ "$quick" = 1 ]; then B=build/sanitize-quick; mode=kernels; bt=Release; else B=build/sanitize; mode=ON; bt=RelWithDebInfo; fi
mkdir -p "$B"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S . -B "$B" "${gen[@]}" -DCMAKE_BUILD_TYPE="$bt" -DGRADVIS_SANITIZE="$mode" \
  -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" >"$B/configure.log"
cmake --build "$B" -j"${JOBS:-2}" >"$B/build.log" || { tail -50 "$B/build.log"; exit 1; }
[ "$build_only" = 1 ] && exit 0

# A copy of the Python package holding the sanitized module.
pkg="$PWD/$B/py"
rm -rf "$pkg" && mkdir -p "$pkg"
cp -r python/gradvis "$pkg/"
rm -f "$pkg"/gradvis/_core*.so
cp "$B"/_core*.so "$pkg/gradvis/"

logs="$PWD/$B/logs"
rm -rf "$logs" && mkdir -p "$logs"
CXX_BIN="${CXX:-g++}"
export LD_PRELOAD="$("$CXX_BIN" -print-file-name=libasan.so) $("$CXX_BIN" -print-file-name=libstdc++.so)"
# Python's own allocations are never freed at exit: leaks are not checked.
export ASAN_OPTIONS="detect_leaks=0:log_path=$logs/asan:handle_segv=1"
export UBSAN_OPTIONS="print_stacktrace=1:log_path=$logs/ubsan"
export PYTHONPATH="$pkg"
export PYTHONDONTWRITEBYTECODE=1

if [ "$quick" = 1 ]; then
  levels=(scalar native)
  # on an AVX-512 CPU, AVX2's bodies too (the exp of pointwise_kernels.inc added
  # out of int32's range there for rounds: only CPUs whose own level is AVX2 ran it)
  if grep -q avx512f /proc/cpuinfo 2>/dev/null; then levels=(scalar avx2 native); fi
  tests=(tests/test_core_limits.py tests/test_core_threads.py tests/test_gemm.py
         tests/test_conv_fused_act.py::test_kernel_equals_separate_activation
         tests/test_conv_backward_mask.py::test_equals_backward_input_then_activation_backward
         tests/test_conv_backward_mask.py::test_activation_mask_bits
         tests/test_conv_backward_mask.py::test_bit_masks_on_two_threads
         tests/test_conv.py::test_matches_reference tests/test_conv.py::test_few_input_channels
         tests/test_conv.py::test_strided_input_gradient_edges tests/test_conv.py::test_short_output_rows
         tests/test_conv_depthwise.py::test_depthwise_matches_reference
         tests/test_conv_depthwise.py::test_grouped_matches_reference tests/test_resample.py
         tests/test_pointwise.py::test_kernels_match_reference tests/test_conv_amx.py
         tests/test_pool.py::test_max_pool_stride2_rows tests/test_pool.py::test_max_pool_wide_rows_with_ties_and_nans
         tests/test_conv.py::test_transposed_small_maps tests/test_conv_epilogue.py::test_epilogue_bits
         tests/test_conv_chain.py::test_chain_equals_the_layers_one_by_one
         tests/test_conv_pw_dw.py::test_pair_equals_the_layers_one_by_one
         tests/test_conv_dw_pw.py::test_pair_equals_the_layers_one_by_one
         tests/test_frozen.py::test_kept_weights_give_the_same_bits
         tests/test_frozen.py::test_entries_are_made_and_dropped_with_the_array
         tests/test_frozen.py::test_entries_of_megabytes_are_kept_and_released
         tests/test_residual_fusion.py::test_kernel_equals_conv_then_add
         tests/test_residual_fusion.py::test_kernel_nan_and_signed_zero_like_add
         tests/test_affine.py::test_affine_few_rows_same_bits_on_any_team)
else
  levels=(scalar avx2 native)
  tests=(tests/test_conv.py tests/test_conv_depthwise.py tests/test_conv_fused_act.py tests/test_conv_backward_mask.py
         tests/test_conv_winograd.py tests/test_pool.py tests/test_activation.py
         tests/test_activation_gates.py tests/test_affine.py tests/test_batchnorm.py tests/test_blur.py
         tests/test_gemm.py tests/test_array_pool.py tests/test_relu_fusion.py tests/test_core_limits.py
         tests/test_core_threads.py tests/test_layers.py tests/test_resample.py tests/test_pointwise.py
         tests/test_conv_amx.py tests/test_frozen.py tests/test_conv_epilogue.py
         tests/test_conv_chain.py tests/test_conv_pw_dw.py tests/test_conv_dw_pw.py
         tests/test_residual_fusion.py)
fi

status=0
for level in "${levels[@]}"; do
  echo "== GRADVIS_SIMD=${level/native/(unset)}"
  if [ "$level" = native ]; then unset GRADVIS_SIMD; else export GRADVIS_SIMD="$level"; fi
  python3 -m pytest -q -s -p no:cacheprovider "${tests[@]}" 2>&1 | tee "$B/pytest-$level.log" || status=1
done

# UBSan, linked beside ASan, may write to stderr whatever log_path says: look in
# both places.
reports=$(grep -h -E "runtime error:|ERROR: AddressSanitizer|ERROR: LeakSanitizer" "$B"/pytest-*.log || true)
if compgen -G "$logs/*" >/dev/null || [ -n "$reports" ]; then
  echo "== sanitizer reports:"
  [ -n "$reports" ] && echo "$reports"
  compgen -G "$logs/*" >/dev/null && cat "$logs"/*
  status=1
else
  echo "== no sanitizer reports"
fi
exit $status
