#!/usr/bin/env bash
# Here (a machine with PyPI): put the pure-Python packages that the GPU machine's image lacks into
# .device_site/, unpacked, so that a GPU check runs there with PYTHONPATH=src:.device_site and no
# network. The GPU machine (the device tool's nvidia-h200: Python 3.12, its own torch, Lightning,
# numpy, scipy, pytest, ...) has none of these; versions are the pins of constraints.txt.
# Usage: bash benchmarks/device/prepare.sh      (then carry .device_site; see benchmarks/NOTES.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
site=.device_site
python=${PYTHON:-.venv/bin/python}
packages=(torchsde trampoline diffusers importlib_metadata hydra-core omegaconf antlr4-python3-runtime
  pyautoattack torchattacks)

pins=() built=()
for name in "${packages[@]}"; do
  pin=$(grep -i -E "^${name//-/[-_]}==" constraints.txt || true)
  [[ -n "$pin" ]] || { echo "prepare.sh: $name has no pin in constraints.txt; add it (make lock)" >&2; exit 2; }
  pins+=("$pin")
  # antlr4-python3-runtime 4.9.3 is published only as a source archive: built into a wheel here.
  [[ "$name" == antlr4-python3-runtime ]] && built+=("$pin")
done
downloaded=()
for pin in "${pins[@]}"; do [[ " ${built[*]} " == *" $pin "* ]] || downloaded+=("$pin"); done

wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
# Every one of them is pure Python (py3-none-any), so it is the same for the GPU machine's Python.
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform any -d "$wheels" "${downloaded[@]}" 2>&1 | grep -v "^WARNING: Location" || true
"$python" -m pip wheel --quiet --no-deps -w "$wheels" "${built[@]}" 2>&1 | grep -v "^WARNING: Location" || true
count=$(find "$wheels" -name '*.whl' | wc -l)
[[ "$count" -eq "${#packages[@]}" ]] || { echo "prepare.sh: got $count wheels for ${#packages[@]} packages" >&2; exit 1; }

rm -rf "$site" && mkdir -p "$site"
for wheel in "$wheels"/*.whl; do
  "$python" -m zipfile -e "$wheel" "$site"
done
# pyautoattack's wheel carries 45 MB of example models that nothing imports; the working tree that
# travels to the GPU machine is limited to 64 MiB.
rm -rf "$site/pyautoattack/examples"
printf '%s\n' "${pins[@]}" >"$site/PINS.txt"
echo "$site: $(du -sh "$site" | cut -f1) ($count packages: ${pins[*]})"
