#!/usr/bin/env bash
# Instructions per get_x round trip on each side, counted by callgrind (which counts
# instructions, not seconds, so the figures do not move with the machine's load).
#
#   benches/profile.sh              # every side, TCP
#   benches/profile.sh --unix       # every side, a Unix socket
#   SIDES="blocking raw" benches/profile.sh
#
# PROFILE_SESSION_GRACE_MS=0 counts without resumable sessions (what they cost).
# Each side runs twice under callgrind (LOW and HIGH round trips); the difference divided by
# the difference in calls is the cost of one call, free of start-up. The other side runs in a
# child process, which valgrind does not follow. Annotated profiles of the HIGH runs are left
# in target/profile/ (callgrind_annotate target/profile/<side>.out).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "profile.sh needs valgrind" >&2; exit 1; }
LOW=${LOW:-2000}
HIGH=${HIGH:-12000}
SIDES=${SIDES:-raw async blocking raw-server server}
transport=(); label=TCP
if [[ "${1:-}" == "--unix" ]]; then label=Unix; fi
cargo bench --bench manager_bench --no-run 2>/dev/null
bench=$(cargo bench --bench manager_bench --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "manager_bench" and m.get("executable"):
        print(m["executable"])')
mkdir -p target/profile
printf '%-12s %6s %14s\n' side "" "instr/call"
for side in $SIDES; do
    total() {
        local calls=$1 out=target/profile/$side.$1.out
        if [[ $label == Unix ]]; then transport=(--unix "target/profile/$side.sock"); fi
        valgrind --tool=callgrind --callgrind-out-file="$out" "$bench" \
            --profile "$side" --calls "$calls" "${transport[@]}" >/dev/null 2>&1
        awk '/^(summary|totals):/ {print $2; exit}' "$out"
    }
    low=$(total "$LOW")
    high=$(total "$HIGH")
    mv "target/profile/$side.$HIGH.out" "target/profile/$side.out"
    rm -f "target/profile/$side.$LOW.out"
    printf '%-12s %6s %14d\n' "$side" "$label" $(( (high - low) / (HIGH - LOW) ))
done
