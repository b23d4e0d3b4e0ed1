#!/usr/bin/env bash
# The browser tests of the web client: tests/browser/*.test.mjs under `node --test`, driving Debian's
# Chromium through playwright-core.
#
# With BASE_URL set, they run against that server; MODEL_FAKE_URL names the model fake
# (tests/fakes/anthropic.mjs) the server was started with (ANTHROPIC_BASE_URL), if any: without it
# the tests that need a slow, scripted stream skip, the rest use the demo model.
# Without BASE_URL this script starts everything itself: a fresh database, the model fake, and the
# built Worker under `wrangler dev` pointed at both; it stops them and drops the database at the end.
#
# Usage: tests/browser/run.sh [--bench] [FILES...]
#   --bench   run scripts/bench-web's measurements instead of the tests (same server setup)
# Without BASE_URL it also starts the OIDC fake (tests/fakes/oidc.mjs) and configures the server's
# OIDC_ISSUER / OIDC_CLIENT_ID with it; with BASE_URL, set OIDC_FAKE_URL to the fake that server trusts.
# Likewise the GitHub fake (tests/fakes/github.mjs): the server's GitHub App (GITHUB_APP_ID, its test
# key, GITHUB_API_URL and GITHUB_OAUTH_URL at the fake); with BASE_URL, set GITHUB_FAKE_URL.
# Environment: BASE_URL, MODEL_FAKE_URL, OIDC_FAKE_URL, GITHUB_FAKE_URL, MODEL_TAP_URL (bench: a tests/browser/model-tap.mjs between that
# server and the fake), CHROMIUM, KEEP_TEST_DBS=1, BROWSER_TEST_TIMEOUT (s, default 900).
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

bench=0
files=()
for a in "$@"; do
  case "$a" in
    --bench) bench=1 ;;
    *) files+=("$a") ;;
  esac
done

need_node
ensure_node_modules
tests/browser/ensure-chromium.sh
# The tests exercise web/public: it must be the build of web/src.
node web/build.mjs --check >/dev/null || die "web/public is stale: run scripts/build-web (and commit web/public)."

tmp="$(mktemp -d "${TMPDIR:-/tmp}/everjust-browser.XXXXXX")"
bg_init "$tmp"
db_url=""
cleanup() {
  stop_all_bg
  if [[ -n "$db_url" && "${KEEP_TEST_DBS:-0}" != 1 ]]; then
    pgtool drop-db "$db_url" >/dev/null 2>&1 || warn "could not drop $(redact_url "$db_url")"
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z "${BASE_URL:-}" ]]; then
  [[ -d functions/cloudflare/build ]] || scripts/build-worker
  ensure_postgres
  db_url="$(url_with_db "$PG_SERVER_URL" "everjust_browser_$(date +%s)_$(random_hex 3)")"
  pgtool ensure-db "$db_url" >&2
  run_migrations "$db_url"
  fake_port="$(free_port)"
  start_bg "$tmp/model-fake.log" env MODEL_FAKE_PORT="$fake_port" node tests/fakes/anthropic.mjs
  wait_http "http://127.0.0.1:$fake_port/health" 20 "$BG_PID" || {
    cat "$tmp/model-fake.log"
    die "the model fake did not start"
  }
  export MODEL_FAKE_URL="http://127.0.0.1:$fake_port"
  model_url="$MODEL_FAKE_URL"
  # "Log in with OIDC": a fake provider the server trusts (tests/fakes/oidc.mjs, client everjust-web).
  oidc_port="$(free_port)"
  start_bg "$tmp/oidc-fake.log" env OIDC_FAKE_PORT="$oidc_port" OIDC_FAKE_CLIENT_ID=everjust-web node tests/fakes/oidc.mjs
  wait_http "http://127.0.0.1:$oidc_port/health" 20 "$BG_PID" || {
    cat "$tmp/oidc-fake.log"
    die "the OIDC fake did not start"
  }
  export OIDC_FAKE_URL="http://127.0.0.1:$oidc_port/"
  # The GitHub screens: the GitHub fake (API, OAuth and the App's authorize page) is the server's App.
  github_port="$(free_port)"
  github_secret="$(random_hex 16)"
  start_bg "$tmp/github-fake.log" env GITHUB_FAKE_PORT="$github_port" GITHUB_FAKE_WEBHOOK_SECRET="$github_secret" node tests/fakes/github.mjs
  wait_http "http://127.0.0.1:$github_port/health" 20 "$BG_PID" || {
    cat "$tmp/github-fake.log"
    die "the GitHub fake did not start"
  }
  export GITHUB_FAKE_URL="http://127.0.0.1:$github_port"
  if ((bench)); then
    # The benchmark times tokens as they leave for the server: a tap between the server and the fake.
    tap_port="$(free_port)"
    start_bg "$tmp/model-tap.log" env MODEL_TAP_PORT="$tap_port" MODEL_FAKE_URL="$MODEL_FAKE_URL" node tests/browser/model-tap.mjs
    wait_http "http://127.0.0.1:$tap_port/_tap/deltas" 20 "$BG_PID" || die "the model tap did not start"
    export MODEL_TAP_URL="http://127.0.0.1:$tap_port"
    model_url="$MODEL_TAP_URL"
  fi
  (
    dotenv_line EVERJUST_ENV test
    dotenv_line JWT_SECRET "$(random_hex 32)"
    dotenv_line ANTHROPIC_BASE_URL "$model_url"
    dotenv_line ANTHROPIC_API_KEY "fake-key-for-browser-tests"
    # Users' own provider keys (the account page's form) are stored only with an encryption key.
    dotenv_line OIDC_ISSUER "$OIDC_FAKE_URL"
    dotenv_line OIDC_AUDIENCE everjust-web
    dotenv_line OIDC_JWKS_URL "${OIDC_FAKE_URL}.well-known/jwks.json"
    dotenv_line OIDC_CLIENT_ID everjust-web
    dotenv_line KEYS_ENCRYPTION_KEY "k1:$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
    # Every test signs up, logs in or refreshes from 127.0.0.1, dozens a minute: the anonymous
    # routes' per-IP limit (60 a minute by default) would refuse the later tests' signups.
    dotenv_line RATE_LIMIT_ANONYMOUS_PER_MINUTE 1000
    # The fake's test-only App key on one line (the core turns literal \n back into newlines).
    dotenv_line GITHUB_APP_ID 4242
    dotenv_line GITHUB_APP_PRIVATE_KEY "$(awk '{printf "%s\\n", $0}' tests/fakes/github-app-test-key.pem)"
    dotenv_line GITHUB_WEBHOOK_SECRET "$github_secret"
    dotenv_line GITHUB_API_URL "$GITHUB_FAKE_URL"
    dotenv_line GITHUB_CLIENT_ID Iv1.fakeclient
    dotenv_line GITHUB_CLIENT_SECRET github-fake-oauth-secret
    dotenv_line GITHUB_OAUTH_URL "$GITHUB_FAKE_URL"
    dotenv_line GITHUB_APP_SLUG everjust-test
  ) >"$tmp/worker.env"
  chmod 600 "$tmp/worker.env"
  start_worker "$db_url" "$tmp/worker.env" "$tmp/state" "$tmp/wrangler.log" || {
    tail -n 60 "$tmp/wrangler.log"
    die "wrangler dev did not answer /health"
  }
  export BASE_URL="http://127.0.0.1:$WORKER_PORT"
  log "server on $BASE_URL, model fake on $MODEL_FAKE_URL, GitHub fake on $GITHUB_FAKE_URL"
fi
export BASE_URL

rc=0
if ((bench)); then
  node tests/browser/bench.mjs || rc=$?
else
  ((${#files[@]})) || files=(tests/browser/*.test.mjs)
  timeout --kill-after=10 "${BROWSER_TEST_TIMEOUT:-900}" \
    node --test --test-concurrency=1 --test-reporter=spec "${files[@]}" || rc=$?
fi
if ((rc != 0)) && [[ -f "$tmp/wrangler.log" ]]; then
  echo "---- wrangler dev log (last 60 lines) ----"
  tail -n 60 "$tmp/wrangler.log"
fi
exit "$rc"
