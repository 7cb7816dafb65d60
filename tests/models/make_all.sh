#!/usr/bin/env bash
# Regenerate every committed ONNX fixture in tests/models/ plus the bundled quick-start
# model examples/models/bert_mini_pruned90.onnx, and rewrite tests/models/manifest.json.
#
# Deterministic: fixed seeds, stack traces stripped; the same torch / transformers / onnx
# versions (torch 2.13.0+cpu, transformers 5.24.0, onnx 1.23.2, onnxscript 0.7.2) give
# byte-identical files. Needs the `examples` extra (torch, transformers, onnxscript) and
# onnxruntime. Run from anywhere:  bash tests/models/make_all.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

rm -f tests/models/manifest.json
rm -rf tests/models/bert_tiny_extdata

python examples/make_pruned_bert.py --arch bert --size tiny --exporter torchscript --opset 14 --out tests/models/bert_tiny_ts_op14.onnx --manifest tests/models/manifest.json
python examples/make_pruned_bert.py --arch bert --size tiny --exporter torchscript --opset 17 --out tests/models/bert_tiny_ts_op17.onnx --manifest tests/models/manifest.json
python examples/make_pruned_bert.py --arch bert --size tiny --exporter torchscript --opset 13 --out tests/models/bert_tiny_ts_op13.onnx --manifest tests/models/manifest.json
python examples/make_pruned_bert.py --arch bert --size tiny --exporter torchscript --opset 21 --pattern block4x1 --out tests/models/bert_tiny_ts_op21_block4x1.onnx --manifest tests/models/manifest.json
python examples/make_pruned_bert.py --arch bert --size tiny --exporter torchscript --opset 17 --attn sdpa --out tests/models/bert_tiny_ts_op17_sdpa.onnx --manifest tests/models/manifest.json
python examples/make_pruned_bert.py --arch bert --size tiny --exporter dynamo --out tests/models/bert_tiny_dynamo.onnx --manifest tests/models/manifest.json
python examples/make_pruned_bert.py --arch bert --size tiny --exporter dynamo --attn sdpa --out tests/models/bert_tiny_dynamo_sdpa.onnx --manifest tests/models/manifest.json
python examples/make_pruned_bert.py --arch distilbert --size tiny --exporter torchscript --opset 14 --out tests/models/distilbert_tiny_ts_op14.onnx --manifest tests/models/manifest.json
python examples/make_pruned_bert.py --arch minilm --size tiny --exporter dynamo --out tests/models/minilm_tiny_dynamo.onnx --manifest tests/models/manifest.json
python examples/make_pruned_bert.py --arch bert --size tiny --exporter torchscript --opset 17 --pattern nm2:8 --out tests/models/bert_tiny_ts_op17_nm2of8.onnx --manifest tests/models/manifest.json
python examples/make_pruned_bert.py --arch bert --size tiny --exporter torchscript --opset 17 --weight-quant int8-dequant --out tests/models/bert_tiny_ts_op17_int8dequant.onnx --manifest tests/models/manifest.json
python examples/make_pruned_bert.py --arch bert --size tiny --exporter torchscript --opset 17 --weight-quant int8-castmul --out tests/models/bert_tiny_ts_op17_int8castmul.onnx --manifest tests/models/manifest.json
python examples/make_pruned_bert.py --arch bert --size tiny --exporter torchscript --opset 14 --external-data --out tests/models/bert_tiny_extdata/model.onnx --manifest tests/models/manifest.json
python examples/make_pruned_bert.py --arch bert --size mini --layers 3 --vocab 768 --exporter torchscript --opset 17 --out examples/models/bert_mini_pruned90.onnx --manifest tests/models/manifest.json
