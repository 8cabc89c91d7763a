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

eval "$(bash "$root/scripts/polyglot-tools.sh")"
"$TSC" --noEmit --strict --allowJs --checkJs --target es2022 --module es2022 \
    --moduleResolution bundler \
    "$root/sdk/js/symphony.d.ts" \
    "$root/plugins-example/welcome-js/welcome.js" \
    "$root/tests/plugins/poly-js/poly.js"
echo 'check-js-types: the typings compile and the JavaScript plugins type-check'
