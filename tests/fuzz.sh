#!/usr/bin/env bash
# fuzz.sh - run every Fuzz target in the module for $FUZZTIME (default 10s)
# each. Crashers are written to the package's testdata/fuzz and then run as
# regression seeds by every `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-10s}
[ "$FUZZTIME" != 0 ] || exit 0
grep -rl --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\(' . | sort | while read -r f; do
  dir=$(dirname "$f")
  for fn in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$f"); do
    echo "fuzz: $dir $fn for $FUZZTIME"
    go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$FUZZTIME" "$dir"
  done
done
