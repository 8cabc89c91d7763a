#!/usr/bin/env bash
# The test command: installs what is missing, builds every plugin, and runs
# the unit, doc and integration tests. Each integration test starts its own
# redis-server on a free loopback port; none touches a Redis you run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/setup.sh
bash scripts/build-plugins.sh
# The compatibility test drives the real Python library; make its venv once.
bash scripts/python-venv.sh >/dev/null
# Unit and integration tests of the host (tests/all), then the SDK's doc example.
# The plugin-author tests (`author::`) compile whole projects in Rust,
# JavaScript and Go, which takes both cores for a minute or more: they run
# after the rest. The tests with a wall-clock bound (each file's `timing`
# module: lateness, a victim's wait behind a flood, a resubscription's gap)
# run apart, one at a time, after the parallel suite: sharing 2 cores with
# the whole suite once made a flood's victim 5.8 s late. Arguments (test
# filters) go to one run of everything they select.
if [ $# -eq 0 ]; then
    cargo test --locked -p symphony-host -- --skip author:: --skip timing::
    cargo test --locked -p symphony-host -- timing:: --test-threads=1
    cargo test --locked -p symphony-host -- author::
else
    cargo test --locked -p symphony-host "$@"
fi
cargo test --locked -p symphony-sdk --doc
