#!/usr/bin/env bash
# Runs the end-to-end HTTP suite (tests/e2e/*.test.mjs) against a running server.
#
# Usage: tests/e2e/run.sh [BASE_URL] [TEST_FILE...]
#   BASE_URL    the server (default: env BASE_URL, else http://127.0.0.1:8787)
#   TEST_FILE   run only these files (default: every tests/e2e/*.test.mjs)
#
# The OIDC tests need a fake issuer at a FIXED address that the server was configured with
# before it started:
#   OIDC_ISSUER=http://127.0.0.1:8790/  OIDC_AUDIENCE=everjust-e2e
#   OIDC_JWKS_URL=http://127.0.0.1:8790/.well-known/jwks.json  (OIDC_ALGORITHMS=RS256,ES256)
# This script reuses a fake already answering on OIDC_FAKE_PORT (default 8790), or starts one
# there (tests/e2e/oidc-issuer.mjs) and stops it at the end. Set OIDC_ISSUER= (empty) when the
# server has no OIDC configured: the OIDC tests then skip.
#
# The chat tests need the model fake (tests/fakes/anthropic.mjs) at the address the server was
# configured with: ANTHROPIC_BASE_URL=http://127.0.0.1:8791 and any ANTHROPIC_API_KEY (OPENAI_BASE_URL
# and OPENAI_API_KEY the same for the OpenAI-compatible test). This script reuses a fake answering on
# MODEL_FAKE_PORT (default 8791), or starts one there and stops it at the end.
#
# Environment passed to the tests:
#   BASE_URL, OIDC_ISSUER, OIDC_AUDIENCE, OIDC_FAKE_URL (where POST /sign is; default OIDC_ISSUER)
#   JWT_SECRET      the server's secret, when known: enables the tests that forge otherwise
#                   valid tokens with one bad claim (expired, wrong iss/aud); they skip without it
#   MAX_FILE_BYTES  the server's file limit when not the default 5 MiB
#   MODEL_FAKE_URL  the model fake the chat tests drive (default http://127.0.0.1:$MODEL_FAKE_PORT)
#   E2E_CONCURRENCY test files run at once (default 2)
#   E2E_REPORTER    node test reporter (default spec)
#   DAYTONA_FAKE_URL the Daytona fake (tests/fakes/daytona.mjs; default http://127.0.0.1:${DAYTONA_FAKE_PORT:-8793}),
#                   reused when it answers, else started; the server needs DAYTONA_API_URL=<the fake>/api,
#                   DAYTONA_API_KEY=daytona-fake-key and DAYTONA_WEBHOOK_SECRET=<the fake's> (else the sandbox
#                   tests skip); JOBS_SECRET and E2E_ADMIN_EMAIL (in the server's ADMIN_EMAILS) enable the
#                   idle-job and quota tests, DAYTONA_IMAGE on the server the tier-resources test
#   GITHUB_FAKE_URL the GitHub fake (tests/fakes/github.mjs; default http://127.0.0.1:${GITHUB_FAKE_PORT:-8792}),
#                   reused when it answers, else started; the server needs GITHUB_APP_ID=4242,
#                   GITHUB_APP_PRIVATE_KEY=<tests/fakes/github-app-test-key.pem>, GITHUB_WEBHOOK_SECRET=<the
#                   fake's GITHUB_FAKE_WEBHOOK_SECRET> and GITHUB_API_URL=<the fake> (else those tests skip)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

command -v node >/dev/null || { echo "run.sh: node (>= 20) is required" >&2; exit 2; }
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || { echo "run.sh: node >= 20 is required, found $(node --version)" >&2; exit 2; }

if (($#)) && [[ "$1" != *.mjs ]]; then
  BASE_URL="$1"
  shift
fi
export BASE_URL="${BASE_URL:-http://127.0.0.1:8787}"
files=("$@")
if ((${#files[@]} == 0)); then
  files=("$here"/*.test.mjs)
fi

fake_port="${OIDC_FAKE_PORT:-8790}"
export OIDC_AUDIENCE="${OIDC_AUDIENCE:-everjust-e2e}"
# OIDC_ISSUER unset -> the default fake; set but empty -> no OIDC (tests skip).
if [[ -z "${OIDC_ISSUER+x}" ]]; then
  export OIDC_ISSUER="http://127.0.0.1:$fake_port/"
fi
export OIDC_FAKE_URL="${OIDC_FAKE_URL:-$OIDC_ISSUER}"

# http_ok URL: exit 0 when URL answers 200.
http_ok() {
  node -e 'fetch(process.argv[1]).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$1"
}

fake_pid=""
model_pid=""
github_pid=""
daytona_pid=""
stop_fake() {
  local pid
  for pid in "$fake_pid" "$model_pid" "$github_pid" "$daytona_pid"; do
    if [[ -n "$pid" ]]; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
}
trap stop_fake EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

if [[ -n "$OIDC_ISSUER" ]]; then
  jwks="${OIDC_FAKE_URL%/}/.well-known/jwks.json"
  if http_ok "$jwks"; then
    echo "run.sh: using the OIDC fake already at $OIDC_FAKE_URL"
  else
    echo "run.sh: starting the OIDC fake on 127.0.0.1:$fake_port"
    OIDC_FAKE_PORT="$fake_port" node "$here/oidc-issuer.mjs" &
    fake_pid=$!
    for _ in $(seq 1 50); do
      http_ok "$jwks" && break
      kill -0 "$fake_pid" 2>/dev/null || { echo "run.sh: the OIDC fake exited (port $fake_port busy?)" >&2; exit 1; }
      sleep 0.2
    done
    http_ok "$jwks" || { echo "run.sh: the OIDC fake does not answer at $jwks" >&2; exit 1; }
  fi
fi

model_port="${MODEL_FAKE_PORT:-8791}"
export MODEL_FAKE_URL="${MODEL_FAKE_URL:-http://127.0.0.1:$model_port}"
if http_ok "${MODEL_FAKE_URL%/}/health"; then
  echo "run.sh: using the model fake already at $MODEL_FAKE_URL"
else
  echo "run.sh: starting the model fake on 127.0.0.1:$model_port"
  MODEL_FAKE_PORT="$model_port" node "$here/../fakes/anthropic.mjs" &
  model_pid=$!
  for _ in $(seq 1 50); do
    http_ok "${MODEL_FAKE_URL%/}/health" && break
    kill -0 "$model_pid" 2>/dev/null || { echo "run.sh: the model fake exited (port $model_port busy?)" >&2; exit 1; }
    sleep 0.2
  done
  http_ok "${MODEL_FAKE_URL%/}/health" || { echo "run.sh: the model fake does not answer at $MODEL_FAKE_URL" >&2; exit 1; }
fi

# The GitHub fake: the GitHub tests skip unless the server is configured for it (see github.test.mjs).
github_port="${GITHUB_FAKE_PORT:-8792}"
export GITHUB_FAKE_URL="${GITHUB_FAKE_URL:-http://127.0.0.1:$github_port}"
if http_ok "${GITHUB_FAKE_URL%/}/health"; then
  echo "run.sh: using the GitHub fake already at $GITHUB_FAKE_URL"
else
  echo "run.sh: starting the GitHub fake on 127.0.0.1:$github_port"
  GITHUB_FAKE_PORT="$github_port" node "$here/../fakes/github.mjs" &
  github_pid=$!
  for _ in $(seq 1 50); do
    http_ok "${GITHUB_FAKE_URL%/}/health" && break
    kill -0 "$github_pid" 2>/dev/null || { echo "run.sh: the GitHub fake exited (port $github_port busy?)" >&2; exit 1; }
    sleep 0.2
  done
fi

# The Daytona fake: the sandbox tests skip unless the server is configured for it (see sandbox.test.mjs).
daytona_port="${DAYTONA_FAKE_PORT:-8793}"
export DAYTONA_FAKE_URL="${DAYTONA_FAKE_URL:-http://127.0.0.1:$daytona_port}"
if http_ok "${DAYTONA_FAKE_URL%/}/health"; then
  echo "run.sh: using the Daytona fake already at $DAYTONA_FAKE_URL"
else
  echo "run.sh: starting the Daytona fake on 127.0.0.1:$daytona_port"
  DAYTONA_FAKE_PORT="$daytona_port" node "$here/../fakes/daytona.mjs" &
  daytona_pid=$!
  for _ in $(seq 1 50); do
    http_ok "${DAYTONA_FAKE_URL%/}/health" && break
    kill -0 "$daytona_pid" 2>/dev/null || { echo "run.sh: the Daytona fake exited (port $daytona_port busy?)" >&2; exit 1; }
    sleep 0.2
  done
fi

if ! http_ok "${BASE_URL%/}/health"; then
  echo "run.sh: no server answers ${BASE_URL%/}/health; start one first (e.g. scripts/dev)" >&2
  exit 1
fi

echo "run.sh: BASE_URL=$BASE_URL OIDC_ISSUER=${OIDC_ISSUER:-<none>} JWT_SECRET=$([[ -n "${JWT_SECRET:-}" ]] && echo set || echo unset)"
rc=0
node --test --test-concurrency="${E2E_CONCURRENCY:-2}" --test-reporter="${E2E_REPORTER:-spec}" "${files[@]}" || rc=$?
exit "$rc"
