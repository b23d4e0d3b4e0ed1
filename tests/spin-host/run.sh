#!/usr/bin/env bash
# Serves the built Spin component on the native test host against a fresh database and checks it:
# /health, /ready, the port conformance suites inside the component (/v1/_conformance), then the
# end-to-end suite (tests/e2e) when SPIN_HOST_E2E=1 (scripts/test's default), with the OIDC, model,
# GitHub and Daytona fakes configured as for the Worker. The host applies Spin's own Postgres value
# rules (see src/postgres.rs): a query that fails on Spin fails here.
#
# Usage: tests/spin-host/run.sh [E2E_TEST_FILE...]   (files limit the e2e run; default all)
# Environment:
#   TEST_DATABASE_URL (or DATABASE_URL)  an empty or migrated database; migrations are applied here
#   SPIN_HOST_E2E=1                      also run tests/e2e/run.sh against the host (with its fakes)
#   SPIN_HOST_KEEP=1                     leave the host (and fakes) running (prints the URL and pid)
# The host's own build is cached in target/spin-host (about 6 min the first time).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

die() { echo "spin-host/run.sh: $*" >&2; exit 1; }
command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"
command -v curl >/dev/null || die "curl not found (apt-get install curl)"
command -v node >/dev/null || die "node not found (Node 20+)"
db="${TEST_DATABASE_URL:-${DATABASE_URL:-}}"
[[ -n "$db" ]] || die "set TEST_DATABASE_URL (or DATABASE_URL) to a Postgres database for the run"

echo "==> migrations"
DATABASE_URL="$db" scripts/migrate
echo "==> component"
scripts/build-spin
wasm="$root/target/spin/wasm32-wasip2/release/everjust_spin.wasm"
echo "==> host"
CARGO_TARGET_DIR="$root/target/spin-host" cargo build --release --locked --manifest-path "$here/Cargo.toml"
host_bin="$root/target/spin-host/release/everjust-spin-host"

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
port="$(free_port)"
base="http://127.0.0.1:$port"
log="$(mktemp "${TMPDIR:-/tmp}/spin-host.XXXXXX.log")"
secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
[[ "${SPIN_HOST_KEEP:-}" == 1 ]] || trap stop_all EXIT
wait_ok() { # URL PID
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# The suite signs users up from one IP: a high anonymous limit, as scripts/test gives wrangler.
vars=(SPIN_VARIABLE_DATABASE_URL="$db" SPIN_VARIABLE_JWT_SECRET="$secret" SPIN_VARIABLE_EVERJUST_ENV=test
  SPIN_VARIABLE_RATE_LIMIT_ANONYMOUS_PER_MINUTE=1000
  SPIN_VARIABLE_KEYS_ENCRYPTION_KEY="k1:$(node -e 'console.log(require("crypto").randomBytes(32).toString("base64"))')")
e2e_env=()
if [[ "${SPIN_HOST_E2E:-}" == 1 ]]; then
  # The suite's fakes, started before the host so it is configured for them (as scripts/test does for wrangler).
  oidc_port="$(free_port)"
  model_port="$(free_port)"
  OIDC_FAKE_PORT="$oidc_port" OIDC_AUDIENCE=everjust-e2e node tests/e2e/oidc-issuer.mjs >"$log.oidc" 2>&1 &
  pids+=($!)
  wait_ok "http://127.0.0.1:$oidc_port/.well-known/openid-configuration" "$!" || { cat "$log.oidc"; die "the OIDC fake did not start"; }
  MODEL_FAKE_PORT="$model_port" node tests/fakes/anthropic.mjs >"$log.model" 2>&1 &
  pids+=($!)
  wait_ok "http://127.0.0.1:$model_port/health" "$!" || { cat "$log.model"; die "the model fake did not start"; }
  vars+=(SPIN_VARIABLE_OIDC_ISSUER="http://127.0.0.1:$oidc_port/" SPIN_VARIABLE_OIDC_AUDIENCE=everjust-e2e
    SPIN_VARIABLE_OIDC_JWKS_URL="http://127.0.0.1:$oidc_port/.well-known/jwks.json" SPIN_VARIABLE_OIDC_ALGORITHMS=RS256,ES256
    SPIN_VARIABLE_ANTHROPIC_BASE_URL="http://127.0.0.1:$model_port" SPIN_VARIABLE_ANTHROPIC_API_KEY=fake-key
    SPIN_VARIABLE_OPENAI_BASE_URL="http://127.0.0.1:$model_port" SPIN_VARIABLE_OPENAI_API_KEY=fake-key)
  e2e_env=(OIDC_FAKE_PORT="$oidc_port" OIDC_ISSUER="http://127.0.0.1:$oidc_port/" OIDC_AUDIENCE=everjust-e2e
    MODEL_FAKE_PORT="$model_port" MODEL_FAKE_URL="http://127.0.0.1:$model_port" JWT_SECRET="$secret")
  # The GitHub fake with its test-only App key (the component is its GitHub App), and the Daytona
  # fake (sandboxes, signed webhooks back), as scripts/test configures them for wrangler.
  github_port="$(free_port)"
  github_secret="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  GITHUB_FAKE_PORT="$github_port" GITHUB_FAKE_WEBHOOK_SECRET="$github_secret" node tests/fakes/github.mjs >"$log.github" 2>&1 &
  pids+=($!)
  wait_ok "http://127.0.0.1:$github_port/health" "$!" || { cat "$log.github"; die "the GitHub fake did not start"; }
  daytona_port="$(free_port)"
  daytona_secret="whsec_$(head -c 24 /dev/urandom | base64 | tr -d '\n')"
  jobs_secret="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  admin="sandbox-admin@e2e.everjust.test"
  DAYTONA_FAKE_PORT="$daytona_port" DAYTONA_FAKE_WEBHOOK_SECRET="$daytona_secret" node tests/fakes/daytona.mjs >"$log.daytona" 2>&1 &
  pids+=($!)
  wait_ok "http://127.0.0.1:$daytona_port/health" "$!" || { cat "$log.daytona"; die "the Daytona fake did not start"; }
  vars+=(SPIN_VARIABLE_GITHUB_APP_ID=4242 SPIN_VARIABLE_GITHUB_APP_PRIVATE_KEY="$(awk '{printf "%s\\n", $0}' tests/fakes/github-app-test-key.pem)"
    SPIN_VARIABLE_GITHUB_WEBHOOK_SECRET="$github_secret" SPIN_VARIABLE_GITHUB_API_URL="http://127.0.0.1:$github_port"
    SPIN_VARIABLE_GITHUB_CLIENT_ID=Iv1.fakeclient SPIN_VARIABLE_GITHUB_CLIENT_SECRET=github-fake-oauth-secret
    SPIN_VARIABLE_GITHUB_OAUTH_URL="http://127.0.0.1:$github_port"
    SPIN_VARIABLE_DAYTONA_API_URL="http://127.0.0.1:$daytona_port/api" SPIN_VARIABLE_DAYTONA_API_KEY=daytona-fake-key
    SPIN_VARIABLE_DAYTONA_WEBHOOK_SECRET="$daytona_secret" SPIN_VARIABLE_JOBS_SECRET="$jobs_secret" SPIN_VARIABLE_ADMIN_EMAILS="$admin")
  e2e_env+=(GITHUB_FAKE_PORT="$github_port" GITHUB_FAKE_URL="http://127.0.0.1:$github_port"
    DAYTONA_FAKE_PORT="$daytona_port" DAYTONA_FAKE_URL="http://127.0.0.1:$daytona_port" JOBS_SECRET="$jobs_secret" E2E_ADMIN_EMAIL="$admin")
fi

t0=$(date +%s%N)
env "${vars[@]}" "$host_bin" "$wasm" --listen "127.0.0.1:$port" >"$log" 2>&1 &
host_pid=$!
pids+=("$host_pid")
for _ in $(seq 1 600); do
  if curl -fsS -o /dev/null "$base/health" 2>/dev/null; then break; fi
  kill -0 "$host_pid" 2>/dev/null || { cat "$log"; die "the host exited"; }
  sleep 0.05
done
t1=$(date +%s%N)
echo "host answered /health $(((t1 - t0) / 1000000)) ms after start ($base, log $log)"

passed=0 failed=0
check() { # NAME EXPECTED_STATUS PATH JS-EXPRESSION-OVER-BODY [CURL-ARGS...]
  local name="$1" want="$2" path="$3" expr="$4" body status
  shift 4
  body="$(curl -sS -w '\n%{http_code}' "$@" "$base$path" || true)"
  status="${body##*$'\n'}"
  body="${body%$'\n'*}"
  if [[ "$status" == "$want" ]] &&
    BODY="$body" node -e 'const body = JSON.parse(process.env.BODY); process.exit(('"$expr"') ? 0 : 1)' 2>/dev/null; then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name: status $status, body: ${body:0:2000}"
    failed=$((failed + 1))
  fi
}
check health_answers_ok 200 /health 'body.status === "ok"'
check ready_reaches_postgres_and_kv 200 /ready 'body.checks.postgres === "ok" && body.checks.kv === "ok"'
check conformance_suites_pass_inside_the_component 200 /v1/_conformance \
  'body.ok === true && body.kv.length > 0 && body.sql.length > 0 && [...body.kv, ...body.sql].every((c) => c.ok)'
check unknown_route_is_a_problem_json_404 404 /v1/no-such-route 'body.code === "not_found"'
check signup_creates_an_account 201 /v1/auth/signup 'body.user.email === "spin-host@example.com" && body.access_token' \
  -X POST -H 'content-type: application/json' --data '{"email":"spin-host@example.com","password":"a long enough passphrase"}'

if [[ "${SPIN_HOST_E2E:-}" == 1 ]]; then
  echo "==> e2e against the Spin host"
  # Its tests count one by one in this hook's closing line (node's summary: "ℹ pass N", "ℹ fail N");
  # a suite that failed outside its tests counts as one failure.
  e2e_out="$(mktemp)"
  e2e_rc=0
  env "${e2e_env[@]}" tests/e2e/run.sh "$base" "$@" 2>&1 | tee "$e2e_out" || e2e_rc=$?
  e2e_pass="$(awk '/^ℹ pass [0-9]+$/ { n += $3 } END { print n + 0 }' "$e2e_out")"
  e2e_fail="$(awk '/^ℹ fail [0-9]+$/ { n += $3 } END { print n + 0 }' "$e2e_out")"
  rm -f "$e2e_out"
  ((e2e_rc == 0 || e2e_fail > 0)) || e2e_fail=1
  passed=$((passed + e2e_pass))
  failed=$((failed + e2e_fail))
fi

if [[ "${SPIN_HOST_KEEP:-}" == 1 ]]; then echo "host left running: pid $host_pid, $base"; fi
echo "spin-host: $passed passed, $failed failed"
[[ "$failed" == 0 ]]
