#!/usr/bin/env bash
# Checks that sdk/js/symphony.d.ts declares every function of the WIT
# interfaces (kept by hand, since `jco types` cannot run here).
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
print('check-js-types: every WIT function is typed')
PY
