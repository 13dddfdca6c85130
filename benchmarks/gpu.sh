#!/usr/bin/env bash
# Everything the GPU path needs measured, in one call of under 8 minutes on one H100:
#   bash benchmarks/gpu.sh            (OUT=<folder> also writes the report to <folder>/gpu.txt)
# 1. the pretraining step of SSAST-Base (faithful, shared mask, fast) in bf16 at batch 24 and at the largest batch
#    that fits, eager and compiled: clips/s, FLOP per clip, TFLOP/s, share of the bf16 peak, peak memory;
# 2. the engine's steps/s on in-memory batches against the bare step;
# 3. the filterbank on the GPU (features.device=model): clips/s against one CPU core, and its difference;
# 4. bf16 against fp32: the losses of the same weights, input and masks;
# 5. the data pipeline per core with and without the filterbank, when fairseq2 and torchaudio are installed.
# Needs torch, timm, numpy and PyYAML; says what it skipped for want of the others. Each part has a time limit
# (480 s together), so that one slow part cannot take the rest with it. SSAST_GPU_SMOKE=1 runs every part at a
# toy size (the tests run it so on a CPU).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
REPORT=${OUT:+$OUT/gpu.txt}

if [ "${SSAST_GPU_SMOKE:-0}" = 1 ]; then
  MODEL=(--depth 1 --input-tdim 128 --mask-size 48); STEP=("${MODEL[@]}" --sizes tiny --random --steps 1 --repeats 1)
  BATCH=4; MAX=4; ENGINE=(--size tiny "${MODEL[@]}" --batch 4 --steps 3 --repeats 1); FBANK=(--batch 4 --repeats 1)
  PRECISION=(--size tiny "${MODEL[@]}" --batch 2); PIPELINE=(--clips 8 --workers 1 --repeats 1)
else
  STEP=(--sizes base --steps 3 --repeats 3); BATCH=24; MAX=max
  ENGINE=(--size base --depth 12 --input-tdim 1024 --mask-size 400 --batch 24 --steps 20 --repeats 2)
  FBANK=(--batch 256 --repeats 5); PRECISION=(--batch 8); PIPELINE=(--clips 256 --workers 4 --repeats 3)
fi

part() {  # part <title> <seconds> <command...>: the command's output, or why it stopped
  local title=$1 limit=$2 start=$SECONDS
  shift 2
  echo "## $title"
  timeout "$limit" "$@" 2>&1 | grep -v -E "Warning|^  check\(|^ *warnings.warn|^[WI][0-9]{4} "
  local rc=${PIPESTATUS[0]}
  if [ "$rc" = 124 ]; then echo "(cut at its limit of $limit s)"; elif [ "$rc" != 0 ]; then echo "(failed: exit $rc)"; fi
  echo "($((SECONDS - start)) s)"
  echo
}

has() { "$PY" -c "import $1" 2>/dev/null; }

{
  echo "# benchmarks/gpu.sh, $(date -u '+%Y-%m-%d %H:%M UTC')"
  "$PY" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU: CPU')"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo
  part "pretraining step, batch $BATCH, eager and compiled" 190 "$PY" benchmarks/pretrain_step.py "${STEP[@]}" --batch "$BATCH" --compile
  part "pretraining step, the largest batch that fits, eager and compiled" 190 \
    "$PY" benchmarks/pretrain_step.py "${STEP[@]}" --batch "$MAX" --compile
  part "the engine against the bare step" 40 "$PY" benchmarks/engine_overhead.py "${ENGINE[@]}"
  part "filterbank on the device" 20 "$PY" benchmarks/fbank_device.py "${FBANK[@]}"
  part "bf16 against fp32" 20 "$PY" benchmarks/precision.py "${PRECISION[@]}"
  if has fairseq2 && has torchaudio && has soundfile; then
    part "data pipeline per core" 20 "$PY" benchmarks/data_pipeline.py "${PIPELINE[@]}"
  else
    echo "## data pipeline per core: skipped (fairseq2, torchaudio or soundfile is not installed here)"; echo
  fi
  has faiss || echo "## retrieval: skipped (faiss is not installed here; benchmarks/retrieval.py measures it)"
  echo "total $SECONDS s"
} | tee ${REPORT:-/dev/null}
