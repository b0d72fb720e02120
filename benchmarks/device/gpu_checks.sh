#!/usr/bin/env bash
# On the GPU machine: the gpu-marked tests, then make bench's purification and attack tables, all in
# one command that ends inside the device tool's 10-minute limit. Prepared here by
# `bash benchmarks/device/prepare.sh` (.device_site: the pure-Python packages the machine lacks).
#
# Here, through the device tool:
#   run(command="bash benchmarks/device/gpu_checks.sh", carry=[".device_site"], timeout_s=600)
# What it writes goes to $OUT (the device tool brings it back), else to benchmarks/results/device/:
#   environment.txt (GPU, driver, versions), gpu_tests.log (pytest -m gpu), RESULTS.md and bench.log
#   (benchmarks/purification.py; every row is written as it is measured, so a stopped run keeps its rows).
# BUDGET_S (default 560) is the whole script's time; the tests get at most TESTS_S (default 240) of it.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-benchmarks/results/device}"
budget_s="${BUDGET_S:-560}"
tests_s="${TESTS_S:-240}"
python="${PYTHON:-python3}"
mkdir -p "$out"
[[ -d .device_site ]] || { echo "gpu_checks.sh: .device_site is missing: run benchmarks/device/prepare.sh here and carry it" >&2; exit 2; }
export PYTHONPATH="$PWD/src:$PWD/.device_site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=disabled
start=$SECONDS

{
  date -u '+%Y-%m-%d %H:%M UTC'
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  "$python" - <<'PY'
import platform, torch, torchsde, diffusers, hydra, pytorch_lightning, pyautoattack, torchattacks  # noqa: F401
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN "
      f"{torch.backends.cudnn.version()}), torchsde {torchsde.__version__}, diffusers {diffusers.__version__}, "
      f"hydra {hydra.__version__}, lightning {pytorch_lightning.__version__}, device "
      f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'none: no CUDA device'}")
PY
} 2>&1 | tee "$out/environment.txt"

timeout "$tests_s" "$python" -m pytest -m gpu -p no:cacheprovider -q -rA --durations=0 tests 2>&1 | tee "$out/gpu_tests.log"
echo "pytest -m gpu: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$out/gpu_tests.log"

# The bench: attack iterations first (two of the four GPU targets, seconds of work), then the
# purification table from the largest batch down; no measurement starts in the last ~100 s.
left=$((budget_s - (SECONDS - start)))
# loop+compile (fp32) is left out: a compile costs about a minute, and the bf16 paths are the GPU's.
timeout "$((left - 10))" "$python" benchmarks/purification.py --sections attack purification \
  --batch-sizes 1024 128 16 --repeats 2 --deadline-s "$((left - 110))" --out "$out/RESULTS.md" \
  --paths reference loop loop+nhwc loop+bf16 loop+bf16+nhwc loop+bf16+nhwc+compile loop+bf16+nhwc+cudagraphs 2>&1 \
  | tee "$out/bench.log"
echo "bench: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$out/bench.log"
