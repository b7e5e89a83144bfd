#!/usr/bin/env bash
# The distill checks that need a GPU, as one script for a lent H100/H200 (under 8 minutes).
#
#   bash benchmarks/distill/gpu_check.sh            # results under $OUT (default: benchmarks/results)
#
# 1. What the machine has: torch/CUDA, transformers, trl, vllm (the machine reaches no package
#    registry, so nothing is installed from the network; winnow itself runs from src/).
# 2. bench_memory_gpu.py at Qwen3-0.6B shapes (random init, bf16): TRL's GKD loss on full logits,
#    TRL's DistillationTrainer chunked loss, winnow all / TIP 50% / Q3 -> distill_memory_gpu.json.
# 3. A 20-step OPD smoke run on the GPU: a tiny addition pair made by `winnow distill sft`
#    (shortened), then `winnow distill train` with TIP -> gpu_opd_smoke.json.
# 4. If vllm imports: 5 steps of the same run with rollout.backend vllm (experimental) ->
#    gpu_vllm_smoke.json, success or the error it hit.
# Every step writes its own JSON, so a step that fails or times out leaves the others.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
WORK=$(mktemp -d)

"$PY" - "$OUT/gpu_environment.json" <<'EOF'
import importlib, json, platform, sys
facts = {"python": platform.python_version()}
for name in ("torch", "transformers", "accelerate", "trl", "vllm", "pydantic", "typer"):
    try:
        facts[name] = importlib.import_module(name).__version__
    except Exception as exc:  # absent, or broken on this machine
        facts[name] = f"unavailable: {type(exc).__name__}: {exc}"[:200]
try:
    import torch
    facts["cuda"] = torch.cuda.is_available()
    facts["device"] = torch.cuda.get_device_name(0) if facts["cuda"] else None
except Exception as exc:
    facts["cuda"] = f"unavailable: {exc}"
json.dump(facts, open(sys.argv[1], "w"), indent=2)
print(json.dumps(facts, indent=2))
EOF

echo "== memory at Qwen3-0.6B shapes"
timeout 300 "$PY" benchmarks/distill/bench_memory_gpu.py --repeats 2 \
    --out "$OUT/distill_memory_gpu.json" || echo "bench_memory_gpu failed or timed out: rc $?"

echo "== 20-step OPD smoke run"
smoke() {  # $1: seconds allowed, $2: output JSON, then --set overrides for the train run
    local limit=$1 out=$2
    shift 2
    timeout "$limit" "$PY" -m winnow distill train --config configs/distill/tip_arith.yaml --out "$WORK/runs" \
        --quiet --set steps=20 --set eval.every=10 --set cpu=false \
        --set student.path="$WORK/models/student" --set teacher.path="$WORK/models/teacher" \
        --set "arms={tip: {name: entropy_sample, p: 0.5}}" "$@" >"$WORK/train.log" 2>&1
    local rc=$?
    "$PY" - "$out" "$rc" "$WORK" <<'EOF'
import glob, json, sys
out, rc, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
result = {"returncode": rc, "log_tail": open(f"{work}/train.log").read()[-3000:]}
summaries = sorted(glob.glob(f"{work}/runs/*/metrics.json"))
if rc == 0 and summaries:
    result["summary"] = json.load(open(summaries[-1])).get("summary")
json.dump(result, open(out, "w"), indent=2)
print(json.dumps({k: v for k, v in result.items() if k != "log_tail"}, indent=2))
EOF
}
# SFT_TEACHER_STEPS / SFT_STUDENT_STEPS shorten the pair for a dry run of this script on a CPU.
timeout 150 "$PY" -m winnow distill sft --config configs/distill/sft_arith.yaml --quiet \
    --out "$WORK/runs" --set output_dir="$WORK/models" \
    --set teacher.steps="${SFT_TEACHER_STEPS:-1500}" --set student.steps="${SFT_STUDENT_STEPS:-300}" \
    >"$WORK/sft.log" 2>&1 || tail -20 "$WORK/sft.log"
smoke 120 "$OUT/gpu_opd_smoke.json"

if "$PY" -c "import vllm" 2>/dev/null; then
    echo "== vLLM backend smoke (experimental)"
    smoke 150 "$OUT/gpu_vllm_smoke.json" --set steps=5 --set rollout.backend=vllm
else
    echo "vllm does not import here: the vLLM backend stays experimental"
fi
rm -rf "$WORK"
