#!/usr/bin/env bash
# `make test`'s stages, in two lanes so that both cores work (the suites mostly keep one busy):
#   lane A: the main suite, then the multi-process / real-model / reliability tests, then the vLLM
#           engine's tests in their own venv, built at low priority from the start (mostly downloading);
#   lane B: the testbed model on one thread (~16 min here; two threads are only 1.1x faster), then
#           the quick demo test, which trains GRPO and SPS from it.
# Every stage shares one fresh test cache, so the testbed and SmolLM2 are built once. Exit status:
# the first failing lane's; a failing lane's log is printed.
# Usage (from the Makefile): SPS_TEST_CACHE=FOLDER tests/stages.sh VENV
set -uo pipefail
set -m  # each background lane in its own process group, so stop() ends its children too
venv=$1
cache=${SPS_TEST_CACHE:?SPS_TEST_CACHE names the shared test cache}
pytest="$venv/bin/python -m pytest -q --ignore=tests/test_vllm_engine.py"
second="multiprocess or real_model or long"
rm -rf "$cache" && mkdir -p "$cache"
export SPS_TEST_CACHE=$cache

nice -n 19 "${MAKE:-make}" -s install-vllm > "$cache/install-vllm.log" 2>&1 &
vllm=$!
{ SPS_CACHE_DIR=$cache OMP_NUM_THREADS=1 "$venv/bin/sps" testbed build > "$cache/testbed.log" 2>&1 \
  && $pytest -m demo --basetemp="$cache/demo-tmp" -p no:cacheprovider; } > "$cache/lane-b.log" 2>&1 &
lane_b=$!

stop() { kill -- -"$vllm" -"$lane_b" 2> /dev/null; wait; exit "$1"; }
$pytest -m "not ($second or demo)" || stop 1
$pytest -m "$second" || stop 1
wait "$vllm" || { echo "building the vLLM venv failed:"; tail -n 40 "$cache/install-vllm.log"; stop 1; }
"${MAKE:-make}" -s test-vllm || stop 1

echo "lane B (testbed model, then the quick demo test):"
wait "$lane_b"; status=$?
cat "$cache/lane-b.log"
[ $status -eq 0 ] || { echo "lane B failed; the testbed build's log:"; tail -n 20 "$cache/testbed.log"; }
exit $status
