#!/bin/bash
# Fine-tunes of a model side by side on one GPU, from the bundle bundle.sh made. Why side by side: the flagship
# is launch-bound there (0.18 s a 40k-frame step on an H100: 6 x 4.56 M params x 10k encoder frames = 1.5 TFLOP/s),
# so extra runs should cost little wall time (not yet measured). Corpora in .gpu/ (or BUNDLE), wheels in .whl/
# (SKIP_PIP=1: the current environment).
# Usage (repo root, on the GPU box): [INIT=default MIN=7 OUT=dir] tools/remote_finetune/run.sh NAME:LR:BATCH_FRAMES...
# Each run keeps the flagship's last fine-tune settings (VTLP, noise, input floor) and a weight EMA; OUT gets
# NAME.tar (best-on-dev weights as fp16 + the run's json files), NAME-last.safetensors (raw final, fp16), all.txt.
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 NAME:LR:BATCH_FRAMES..." >&2; exit 2; }
PY=${PY:-python3}
MIN=${MIN:-7}
INIT=${INIT:-default}
OUT=${OUT:-/tmp/gpu-out}
BUNDLE=${BUNDLE:-.gpu}  # the corpora (train-*/train.jsonl, dev/dev.jsonl)
RUNS=${RUNS:-/tmp}  # run dirs go to RUNS/run-NAME
HERE=$(dirname "$0")
mkdir -p "$OUT"
date
if [ -z "${SKIP_PIP:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
  # edgeasr itself from this tree (its folders map into the edgeasr namespace only when installed)
  $PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . || exit 3
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
$PY -c "import torch, kaldi_native_fbank, jiwer, soundfile, edgeasr.training.train
print('preflight: torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 4
TRAINS=""
for m in "$BUNDLE"/train-*/train.jsonl; do TRAINS="$TRAINS --train $m"; done
echo "train manifests:$TRAINS"
fit() {  # NAME LR BATCH_FRAMES
  $PY -c "from edgeasr.cli import main; main()" train --init "$INIT" --config configs/flagship-vtlp-ft.json \
    --noise-snr 0,25 --input-floor -80 --ema 0.998 --lr "$2" --batch-frames "$3" $TRAINS \
    --dev "$BUNDLE/dev/dev.jsonl" --out "$RUNS/run-$1" --max-minutes "$MIN" ${EXTRA:-} > "$OUT/$1.log" 2>&1
  echo "$1 train rc $?"
  $PY "$HERE/pack.py" "$RUNS/run-$1" "$OUT" "$1"
}
for spec in "$@"; do
  IFS=: read -r name lr frames <<< "$spec"
  fit "$name" "$lr" "$frames" &
  sleep 2
done
( sleep 90; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null ) &
wait
date
for f in "$OUT"/*.log; do
  echo "== $f"; grep -v "^step [0-9]*:" "$f" | tail -n 12
  { echo "== $f"; cat "$f"; } >> "$OUT/all.txt"; rm "$f"
done
ls -la "$OUT"
