#!/usr/bin/env bash
# Markdown summary of bench/results/*.json (written by bench/run.sh); missing runs show "–".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/results"

# q FILE FILTER: jq on a result file, "–" when the file or the value is missing.
q() { [[ -f "$1.json" ]] && jq -r "($2) | if . == null then \"–\" else . end" "$1.json" 2>/dev/null || echo "–"; }
r0() { q "$1" "$2 | if type == \"number\" then (. * 10 | round / 10) else . end"; }
mb() { q "$1" ".peak_rss_bytes | if . then (. / 1048576 | round) else null end"; }

echo "## Figures ($(sed -n 's/^date: //p' machine.txt 2>/dev/null), commit $(sed -n 's/^commit: //p' machine.txt 2>/dev/null))"
echo
sed 's/^/    /' machine.txt 2>/dev/null || true
echo
echo "### Open-loop sweep (clinic workload, 50 queues of 5)"
echo
echo "| offered cmd/s | events/s | rate held | command p99 ms | e2e p50 ms | e2e p90 ms | e2e p99 ms | e2e max ms | drain ms | peak RSS MB |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for f in sweep-*.json; do
    [[ -f "$f" ]] || continue
    n="${f%.json}"
    echo "| ${n#sweep-} | $(r0 "$n" .events_per_s) | $(q "$n" .rate_held) | $(r0 "$n" .command_latency_ms.p99) | $(r0 "$n" .e2e_lag_ms.p50) | $(r0 "$n" .e2e_lag_ms.p90) | $(r0 "$n" .e2e_lag_ms.p99) | $(r0 "$n" .e2e_lag_ms.max) | $(r0 "$n" .drain.time_ms) | $(mb "$n") |"
done | sort -t'|' -k2 -n
echo
echo "### Other scenarios"
echo
echo "| scenario | events/s | command p50 / p99 ms | e2e p50 / p99 / max ms | dispatch p50 / projection p50 ms | drain ms | peak RSS MB |"
echo "|---|---|---|---|---|---|---|"
for n in idle moderate closed queue-10 queue-1000 growth; do
    [[ -f "$n.json" ]] || continue
    echo "| $n | $(r0 "$n" .events_per_s) | $(r0 "$n" .command_latency_ms.p50) / $(r0 "$n" .command_latency_ms.p99) | $(r0 "$n" .e2e_lag_ms.p50) / $(r0 "$n" .e2e_lag_ms.p99) / $(r0 "$n" .e2e_lag_ms.max) | $(r0 "$n" .stages_ms.outbox_dispatch.p50) / $(r0 "$n" .stages_ms.projection_processing.p50) | $(r0 "$n" .drain.time_ms) | $(mb "$n") |"
done
echo
if [[ -f idle.json ]]; then
    echo "Idle floor (INSERT+NOTIFY commit → LISTEN → persistent confirmed AMQP message consumed):" \
         "p50 $(r0 idle .floor.p50_ms) ms, p99 $(r0 idle .floor.p99_ms) ms;" \
         "e2e p50 / floor p50 = $(r0 idle .lag_to_floor_ratio)."
    echo
fi
if [[ -f queue-10.json && -f queue-1000.json ]]; then
    echo "Queue size (PatientCheckedIn e2e p99, ms): 10 waiting $(r0 queue-10 '.by_event_type[] | select(.event_type == "PatientCheckedIn") | .p99'),"\
         "1,000 waiting $(r0 queue-1000 '.by_event_type[] | select(.event_type == "PatientCheckedIn") | .p99')."
    echo
fi
echo "### Rebuild"
echo
echo "| database | events | streams | seconds | events/s |"
echo "|---|---|---|---|---|"
for n in rebuild-small-queues rebuild-big-queues; do
    [[ -f "$n.json" ]] || continue
    echo "| $n | $(q "$n" .events) | $(q "$n" .streams) | $(q "$n" .seconds) | $(q "$n" .events_per_s) |"
done
echo
echo "### NOTIFY tax (waitroom serve, closed loop 32 connections, appends only)"
echo
echo "| idle flag | run | events/s | command p50 / p99 ms |"
echo "|---|---|---|---|"
for f in notify-*.json; do
    [[ -f "$f" ]] || continue
    n="${f%.json}"; rest="${n#notify-}"
    label="down (no NOTIFY)"; [[ "${rest%-*}" == 1 ]] && label="up (every append notifies)"
    echo "| $label | ${rest#*-} | $(r0 "$n" .events_per_s) | $(r0 "$n" .command_latency_ms.p50) / $(r0 "$n" .command_latency_ms.p99) |"
done
on=$(cat notify-1-*.json 2>/dev/null | jq -s 'if length > 0 then (map(.events_per_s) | add / length) else empty end' || true)
off=$(cat notify-0-*.json 2>/dev/null | jq -s 'if length > 0 then (map(.events_per_s) | add / length) else empty end' || true)
if [[ -n "$on" && -n "$off" ]]; then
    echo
    jq -rn --argjson on "$on" --argjson off "$off" \
        '"Mean: \($on | round) events/s notifying vs \($off | round) not; tax \((1 - $on / $off) * 1000 | round / 10) %."'
fi
if [[ -f profile.md ]]; then
    echo
    sed 's/^## /### /' profile.md
fi
