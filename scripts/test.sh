#!/usr/bin/env bash
# The whole test suite of modkit: formatting, lints, every test of every crate
# (unit, conformance on each backend, trybuild, doc tests), the shop example,
# and the web example's tests in each package.
#
# It installs what it needs when it can (through apt-get: redis-server for the
# distributed package's tests, chromium for the browser test) and otherwise
# stops with a message that says exactly what to install. It never skips a part silently.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says how long the run has taken so far (CI allows 25 minutes).
say() { printf '\n==> [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }
die() { printf '\nerror: %s\n' "$*" >&2; exit 1; }

need_redis() {
  if command -v redis-server >/dev/null 2>&1; then return; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing redis-server (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    # The tests start their own servers on free ports; the packaged service is not needed.
    (service redis-server stop || true) >/dev/null 2>&1
  fi
  command -v redis-server >/dev/null 2>&1 ||
    die "redis-server is required for the distributed tests: install it (Debian: sudo apt-get install redis-server) and run again"
}

# The web tests drive the example in headless Chromium (tests/web_browser.rs);
# the workspace run below includes them, so it is installed first.
need_chromium() {
  local bin="${MODKIT_CHROMIUM:-/usr/bin/chromium}"
  if [ -x "$bin" ]; then return; fi
  if [ -z "${MODKIT_CHROMIUM:-}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing chromium (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  [ -x "$bin" ] ||
    die "chromium is required for the browser test: install it (Debian: sudo apt-get install -y chromium) or set MODKIT_CHROMIUM to a Chrome/Chromium binary, and run again"
}

command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs)"
need_redis
need_chromium
export MODKIT_REDIS_SERVER="$(command -v redis-server)"

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy (all targets, all features, -D warnings)"
cargo clippy --workspace --all-targets --all-features -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps

say "cargo test (workspace, all features; includes the doc tests)"
cargo test --workspace --all-features

say "hostile input on the default codec (bincode; the run above used postcard)"
cargo test -p mod-distribute --test hostile --test poison

say "fuzz runner, short run (100,000 inputs per target; the long run is in the README)"
cargo run -q --all-features --example fuzz -- all 100000

say "failover example (three redis-servers, three controller voters, kill -9 of the primary)"
fo="$(cargo run -q --features resilience --example failover)"
printf '%s\n' "$fo"
grep -q 'all retryable: true' <<<"$fo" || die "the failover example did not see a clean failover"

say "shop example (monolith)"
mono="$(cargo run -q --example shop)"
printf '%s\n' "$mono"
grep -q '^== done$' <<<"$mono" || die "the shop example did not finish its scenario"

say "shop example (distributed: several OS processes, its own redis-server)"
dist="$(cargo run -q --example shop --no-default-features --features distribute)"
diff <(printf '%s\n' "$mono") <(printf '%s\n' "$dist") ||
  die "the distributed shop printed another transcript than the monolith (diff above)"
echo "same transcript as the monolith"

say "shop example (distributed, feature prometheus: a process serves /metrics, checked after the scenario)"
log="$(mktemp)"
prom="$(cargo run -q --example shop --no-default-features --features distribute,prometheus 2>"$log")" ||
  { cat "$log" >&2; die "the distributed shop with metrics failed (its log above)"; }
diff <(printf '%s\n' "$mono") <(printf '%s\n' "$prom") ||
  die "the distributed shop with metrics printed another transcript than the monolith (diff above)"
grep 'latency histograms present' "$log" || { cat "$log" >&2; die "the shop did not check its /metrics"; }
rm -f "$log"

# The workspace run (all features) already ran tests/web.rs on both backends
# and the browser test on the monolith; here the web example is built and
# tested as each package ships it, the browser test on the distributed one too.
say "web example over HTTP and in Chromium (monolith package)"
cargo test -q --features axum --test web --test web_browser

say "web example over HTTP and in Chromium (distributed package, its own redis-server)"
cargo test -q --no-default-features --features distribute,axum --test web --test web_distributed --test web_browser

say "all tests passed"
