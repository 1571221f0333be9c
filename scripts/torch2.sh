#!/usr/bin/env bash
# The torch 2.6 + official safetensors judge: a Debian trixie root with python3-torch 2.6 and
# python3-safetensors 0.4.5 (the same root as ../shared/tools/torch2-chroot.sh builds).
#
#   scripts/torch2.sh build                 build ROOT once if it is missing (root, Debian mirror, ~2-4 min), print versions
#   scripts/torch2.sh run DIR ARGS...       run `python3 ARGS...` inside ROOT with DIR at /work (cwd /work) and
#                                           this repository at /repo (read-only: fixtures, test/py scripts)
#   scripts/torch2.sh available             exit 0 when ROOT has torch and safetensors
#
# ROOT is $CKPT_TORCH2_ROOT or /opt/torch2. `run` mounts DIR in a private mount namespace (unshare), so
# concurrent runs (parallel test workers) never see or undo each other's mounts, and nothing stays mounted.
set -euo pipefail
root=${CKPT_TORCH2_ROOT:-/opt/torch2}
noise() { grep -v -e 'UCX' -e 'cpuinfo' >&2 || true; }

has_judges() { [ -x "$root/usr/bin/python3" ] && chroot "$root" python3 -c 'import torch, safetensors.torch' >/dev/null 2>&1; }

case "${1:-}" in
  available)
    has_judges ;;
  build)
    if ! has_judges; then
      if [ ! -x "$root/usr/bin/python3" ] || ! chroot "$root" python3 -c 'import torch' >/dev/null 2>&1; then
        command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
        mkdir -p "$root"
        mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null \
          | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ' || true)
        [ -n "$mirror" ] || { echo "no Debian mirror found in the apt sources" >&2; exit 1; }
        debootstrap --variant=minbase --include=python3-torch,python3-numpy,python3-safetensors trixie "$root" "$mirror" >/tmp/torch2-debootstrap.log 2>&1 \
          || { tail -n 20 /tmp/torch2-debootstrap.log >&2; exit 1; }
      fi
      if ! chroot "$root" python3 -c 'import safetensors.torch' >/dev/null 2>&1; then
        chroot "$root" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-safetensors' >/dev/null 2>&1 \
          || { echo "could not install python3-safetensors in $root" >&2; exit 1; }
      fi
    fi
    chroot "$root" python3 -c 'import torch, safetensors; print("torch", torch.__version__, "safetensors", safetensors.__version__)' 2> >(noise)
    ;;
  run)
    dir=$(cd "$2" && pwd); shift 2
    repo=$(cd "$(dirname "$0")/.." && pwd)
    mkdir -p "$root/work" "$root/repo" "$root/proc"
    exec unshare --mount --propagation private /bin/sh -c '
      root=$1; dir=$2; repo=$3; shift 3
      mount --bind "$dir" "$root/work" || exit 125
      { mount --bind "$repo" "$root/repo" && mount -o remount,bind,ro "$root/repo"; } || exit 125
      mountpoint -q "$root/proc" || mount -t proc proc "$root/proc" || exit 125
      exec chroot "$root" /bin/sh -c "cd /work && exec python3 \"\$@\"" sh "$@"' sh "$root" "$dir" "$repo" "$@" 2> >(noise)
    ;;
  *)
    sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
