#!/usr/bin/env bash
# The project's whole test run: formatting, vet, every test under the race
# detector (goroutine-leak checks included), and a short fuzz of the
# Retry-After parser. The comparison benchmarks' module is built and vetted
# so it cannot rot. Run from anywhere; exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== gofmt"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test -race"
# The fleet breaker's chaos and cluster tests run in their own step below.
fleet='^(TestChaos|TestClusterFleetSurvivesFailover)$'
go test -race -count=1 -timeout 8m -skip "$fleet" ./...

echo "== fleet breaker under Redis faults (chaos) and through a Redis Cluster failover, with their figures"
go test -race -count=1 -timeout 5m -v -run "$fleet" ./breaker/redisbreaker/ | grep -v '^=== '

echo "== allocation checks (the race detector allocates, so they run without it)"
go test -count=1 -run 'Alloc' ./...

echo "== peak RSS of hordeproxy with oversized bodies (without the race detector, which multiplies memory)"
go test -count=1 -run 'PeakRSS' ./cmd/hordeproxy/

echo "== fuzz ParseRetryAfter (10s)"
go test -run '^$' -fuzz '^FuzzParseRetryAfter$' -fuzztime 10s .

if [ -f bench/go.mod ]; then
  echo "== comparison module (bench/): vet, and its configuration tests (-short)"
  (cd bench && go vet ./... && go test -count=1 -short ./...)
fi
echo "== all checks passed"
