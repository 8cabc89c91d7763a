#!/usr/bin/env bash
# Makes (once) a Python virtualenv with the real `mimeiapify==1.4.3` for the
# compatibility test, and prints its python's path. The library needs Python
# 3.12 or newer: this uses python3.13/python3.12 from PATH or pyenv. Quick when
# the venv is already there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="1.4.3"
venv="$root/target/py-venv-mimeiapify-$version"
if [ -x "$venv/bin/python" ] && [ -f "$venv/.ready" ]; then
    echo "$venv/bin/python"
    exit 0
fi
py=""
for cand in python3.13 python3.12 \
    "$HOME"/.pyenv/versions/3.13*/bin/python3 "$HOME"/.pyenv/versions/3.12*/bin/python3 \
    python3; do
    if p="$(command -v "$cand" 2>/dev/null)" && "$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
        py="$p"
        break
    fi
done
if [ -z "$py" ]; then
    echo "python-venv: mimeiapify needs Python >= 3.12; none found (install python3.12)" >&2
    exit 1
fi
echo "python-venv: creating $venv with $py (mimeiapify==$version; takes a minute or two)" >&2
rm -rf "$venv"
"$py" -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "mimeiapify==$version" >&2
touch "$venv/.ready"
echo "$venv/bin/python"
