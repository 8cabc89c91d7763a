#!/usr/bin/env bash
# Checks sdk/js/symphony.d.ts (kept by hand, since `jco types` cannot run
# here): it declares every function of the WIT interfaces, it compiles, and
# the JavaScript plugins type-check against it (`tsc --noEmit`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python3 - "$root/wit/symphony.wit" "$root/sdk/js/symphony.d.ts" <<'PY'
import re, sys
wit, dts = open(sys.argv[1]).read(), open(sys.argv[2]).read()
missing = []
for iface, body in re.findall(r'interface ([a-z-]+) \{(.*?)\n\}', wit, re.S):
    if iface in ('types', 'log', 'context'):
        continue
    ns = re.sub(r'-(.)', lambda m: m.group(1).upper(), iface)
    block = re.search(r'namespace %s \{(.*?)\n\}' % ns, dts, re.S)
    for fn in re.findall(r'^\s*([a-z-]+): func', body, re.M):
        name = re.sub(r'-(.)', lambda m: m.group(1).upper(), fn)
        name = 'delete_' if name == 'delete' else name
        if not block or not re.search(r'function %s\(' % name, block.group(1)):
            missing.append(f'{iface}.{fn}')
if missing:
    sys.exit('sdk/js/symphony.d.ts lacks: ' + ', '.join(missing))
# symphony.js imports every interface of the world.
pkg, version = re.search(r'^package ([^@]+)@(.+);$', wit, re.M).groups()
js = open(sys.argv[2].replace('.d.ts', '.js')).read()
unimported = [i for i in re.findall(r'^\s*import ([a-z-]+);$', wit, re.M)
              if f"'{pkg}/{i}@{version}'" not in js]
if unimported:
    sys.exit('sdk/js/symphony.js does not import: ' + ', '.join(unimported))
print('check-js-types: every WIT function is typed')
PY

# TypeScript's compiler, pinned, installed once per machine beside the
# tools `symphony-host build` installs.
TYPESCRIPT_VERSION=5.9.3
tools="${SYMPHONY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/symphony-host/tools}"
ts="$tools/ts-$TYPESCRIPT_VERSION"
if [ ! -f "$ts/.ready" ] || [ ! -x "$ts/node_modules/.bin/tsc" ]; then
    command -v npm >/dev/null || { echo "check-js-types: npm is missing (install Node.js 20+)" >&2; exit 1; }
    echo "check-js-types: installing typescript $TYPESCRIPT_VERSION" >&2
    rm -rf "$ts" && mkdir -p "$ts"
    (cd "$ts" && npm install --silent --no-audit --no-fund "typescript@$TYPESCRIPT_VERSION" >&2)
    touch "$ts/.ready"
fi
tsc() {
    "$ts/node_modules/.bin/tsc" --noEmit --strict --allowJs --checkJs --target es2022 --module es2022 \
        --moduleResolution bundler "$@"
}
tsc "$root/sdk/js/symphony.d.ts" \
    "$root"/plugins-example/welcome-js/src/*.js \
    "$root/tests/plugins/poly-js/poly.js"
echo 'check-js-types: the typings compile and the JavaScript plugins type-check'

# A project made by `symphony-host new js` type-checks against the typings
# it is given (the host binary: $SYMPHONY_HOST_BIN, else the debug build).
host="${SYMPHONY_HOST_BIN:-}"
if [ -z "$host" ]; then
    (cd "$root" && cargo build --locked --quiet -p symphony-host)
    host="$root/target/debug/symphony-host"
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$host" new js typed --dir "$tmp/typed" >/dev/null
tsc "$tmp"/typed/src/*.js "$tmp/typed/symphony/symphony.d.ts"
echo 'check-js-types: a new JavaScript project type-checks'
