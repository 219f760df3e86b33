#!/usr/bin/env bash
# Browser check of allot's pages: starts `allot all` (and `allot demo` for it
# to scrape) on loopback ports, loads /targets, /service-discovery, /cluster
# and /config in headless Chromium, checks what each rendered page shows,
# and writes a screenshot of each into docs/.
#
#   go tool task browser-check        (or: bash test/browser/pages.sh)
#
# Needs chromium (Debian: apt-get install -y chromium), curl and python3.
# CHROMIUM=/path/to/chrome overrides the browser; OUT=dir the screenshot
# directory (default docs).
set -euo pipefail

cd "$(dirname "$0")/../.."
out=${OUT:-docs}
chromium=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$chromium" ]; then
  echo "browser-check: chromium not found; on Debian: apt-get install -y chromium" >&2
  exit 1
fi

dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

fail() {
  echo "browser-check: $*" >&2
  echo "--- allot all log (tail) ---" >&2
  tail -n 30 "$dir/all.log" >&2 || true
  exit 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

go build -o "$dir/allot" ./cmd/allot
demo_port=$(free_port)
web_port=$(free_port)
base=http://127.0.0.1:$web_port
secret=browser-check-password-$$

# Twelve demo targets, two of them dropped by relabelling (for
# /service-discovery), one static target nothing listens on (a down row on
# /targets), and a password that /config must not show.
cat >"$dir/allot.yml" <<EOF
global:
  scrape_interval: 5s
  scrape_timeout: 4s
scrape_configs:
  - job_name: demo
    basic_auth:
      username: demo
      password: $secret
    http_sd_configs:
      - url: http://127.0.0.1:$demo_port/sd
        refresh_interval: 10s
    relabel_configs:
      - source_labels: [instance]
        regex: demo-1[01]
        action: drop
  - job_name: unreachable
    static_configs:
      - targets: ["127.0.0.1:1"]
EOF

"$dir/allot" demo --web.listen-address=127.0.0.1:$demo_port --demo.targets=12 --log.level=warn >"$dir/demo.log" 2>&1 &
pids+=($!)
"$dir/allot" all --config.file="$dir/allot.yml" --web.listen-address=127.0.0.1:$web_port \
  --data.dir="$dir/data" --scrapers=3 --log.level=warn >"$dir/all.log" 2>&1 &
pids+=($!)

# Ready, then every target scraped at least once (none left unknown).
wait_for() {
  local what=$1; shift
  for _ in $(seq 120); do
    if "$@"; then return 0; fi
    kill -0 "${pids[1]}" 2>/dev/null || fail "allot all exited while waiting for $what"
    sleep 0.5
  done
  fail "timed out waiting for $what"
}
all_scraped() {
  curl -sf "$base/api/v1/targets?state=active" | python3 -c '
import json, sys
ts = json.load(sys.stdin)["data"]["activeTargets"]
sys.exit(0 if len(ts) == 11 and all(t["health"] in ("up", "down") and t["scraper"] for t in ts) else 1)'
}
wait_for "/-/ready" curl -sf "$base/-/ready" -o /dev/null
wait_for "all 11 targets scraped" all_scraped

browser() {
  "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$dir/chromium" \
    --window-size=1280,900 "$@" 2>>"$dir/chromium.log"
}

# check PAGE PATTERN MIN DESCRIPTION: at least MIN lines of PAGE's DOM match
# the extended regex PATTERN.
check() {
  local page=$1 pattern=$2 min=$3 what=$4 n
  n=$(grep -cE "$pattern" "$dir/$page.html" || true)
  [ "$n" -ge "$min" ] || fail "/$page: $what: $n lines match /$pattern/, want at least $min"
  echo "  /$page: $what ($n)"
}
# refute PAGE PATTERN DESCRIPTION: no line of PAGE's DOM matches.
refute() {
  ! grep -qE "$2" "$dir/$1.html" || fail "/$1: $3"
  echo "  /$1: $3"
}

for page in targets service-discovery cluster config; do
  # Each table row is serialized on its own line, as the templates write it.
  browser --dump-dom "$base/$page" >"$dir/$page.html"
  [ -s "$dir/$page.html" ] || fail "/$page: chromium rendered nothing"
done

echo "checking the rendered pages:"
check targets '<td class="up">up</td>' 10 "demo targets up"
check targets '<td class="down">down</td>' 1 "the unreachable target down"
check targets '<a href="[^"]*scraper=scraper-[0-2]">scraper-[0-2]</a>' 11 "every target's owner named"
check service-discovery 'instance=.demo-1[01]' 2 "dropped targets with their discovered labels"
check service-discovery '<span class="down">dropped</span>' 2 "dropped rows"
for s in 0 1 2; do
  check cluster "<a href=\"/targets\?scraper=scraper-$s\">scraper-$s</a>" 1 "scraper-$s listed"
done
check config 'password: &lt;secret&gt;' 1 "the password redacted"
refute config "$secret" "the password not shown"

mkdir -p "$out"
for page in targets service-discovery cluster config; do
  browser --screenshot="$out/$page.png" "$base/$page" >/dev/null
  size=$(stat -c %s "$out/$page.png")
  [ "$size" -lt 307200 ] || fail "$out/$page.png is $size bytes; keep screenshots under 300 KB"
  echo "wrote $out/$page.png ($((size / 1024)) KB)"
done
