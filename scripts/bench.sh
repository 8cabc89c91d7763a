#!/usr/bin/env bash
# The benchmark suite (bench/suite.rs): installs what is missing, builds the
# plugins and the host, starts its own redis-servers and prints one table per
# section and a summary against the targets.
#
#   scripts/bench.sh                     # release build, full sizes (figures)
#   scripts/bench.sh --only burst,steady # some sections
#   scripts/bench.sh --smoke             # debug build, small sizes (CI)
#
# Sections: overhead, schedule, burst, steady, library, reload, rss, admin, cluster.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/setup.sh --no-browser
bash scripts/build-plugins.sh
if [[ "${1:-}" == "--smoke" ]]; then
    shift
    # The test profile: the same build the tests use, no release build.
    cargo test --locked -p symphony-host --bench suite -- --quick "$@"
else
    cargo bench --locked -p symphony-host --bench suite -- "$@"
fi
