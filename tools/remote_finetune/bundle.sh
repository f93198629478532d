#!/bin/bash
# Build the bundle a remote GPU box needs for run.sh when it can reach no package index and takes a capped
# upload (64 MiB here): Opus copies of the corpora in .gpu/ and the wheels its image lacks in .whl/ (both ignored
# by git; carry them). Usage: tools/remote_finetune/bundle.sh DEV.jsonl TRAIN.jsonl... (run in the repo root).
# Measured 2026-12-04: --kbps 12 is 13.8 kb/s, 6.2 MB per audio hour; the flagship then shipped (dev bi 25.2 %
# on wav) lost 1.8 WER points on dev read at that rate (16: 0.9), so train at 12 and score dev at 16.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 DEV.jsonl TRAIN.jsonl..." >&2; exit 2; }
EDGEASR=${EDGEASR:-edgeasr}
PY=${PY:-python}
dev=$1; shift
rm -rf .gpu/dev .gpu/train-*
$EDGEASR data transcode "$dev" --out .gpu/dev --kbps 16
for m in "$@"; do
  $EDGEASR data transcode "$m" --out ".gpu/train-$(basename "$(dirname "$m")")" --kbps "${KBPS:-12}"
done
# the remote image has torch, numpy, scipy, safetensors, click, rich, onnx; these it lacks, for its Python 3.12
mkdir -p .whl
for pkg in kaldi_native_fbank jiwer rapidfuzz soundfile cffi pycparser soxr; do
  ver=$($PY -c "import importlib.metadata as m; print(m.version('$pkg'))")
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$pkg==$ver"
done
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
echo "travels: tracked tree $((tree / 1000000)) MB + .gpu $(du -sb .gpu | cut -f1 | awk '{print int($1/1e6)}') MB" \
     "+ .whl $(du -sb .whl | cut -f1 | awk '{print int($1/1e6)}') MB; move shipped models run.sh does not use" \
     "(toolchain/pretrained/*) out of the tree while it travels if that is over the cap"
