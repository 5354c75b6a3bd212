#!/usr/bin/env bash
# Serve LiteLLM proxy for the benchmark, in the foreground (the harness starts and stops it).
#   bench/litellm/start_litellm.sh [WORKERS=2] [PORT=4000]
# Env: LITELLM_VENV (default .venv-litellm), BENCH_MOCK_V1 (the mock's /v1 URL, required).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
workers="${1:-2}"
port="${2:-4000}"
venv="${LITELLM_VENV:-$here/../../.venv-litellm}"
: "${BENCH_MOCK_V1:?set BENCH_MOCK_V1 to the mock upstream URL, e.g. http://127.0.0.1:18000/v1}"
# Production settings, and nothing fetched from the internet (bundled cost map, no telemetry).
export LITELLM_MODE=PRODUCTION LITELLM_LOG=ERROR LITELLM_LOCAL_MODEL_COST_MAP=True
export LITELLM_TELEMETRY_DISABLED=true NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
exec "$venv/bin/litellm" --config "$here/config.yaml" --host 127.0.0.1 --port "$port" \
  --num_workers "$workers"
