#!/usr/bin/env bash
# modelfs in one command: installs what is missing, builds, then shows two AI tools' model folders
# (a fake AUTOMATIC1111 and a fake ComfyUI, sharing several models byte for byte) imported into
# one store that keeps a single copy of each file; then adopts both installs in place (each
# tool's models/ folder becomes its view) and gives the plain folders back.
#
#   tools/demo.sh
#
# Environment:
#   MODELFS_DEMO_DIR=DIR     where the demo lives, recreated on each run (default /tmp/modelfs-demo)
#   MODELFS_DEMO_SCALE=S     model sizes: small (~20 MiB in all) or medium (default, ~520 MiB in all)
#   MODELFS_BUILD_DIR=DIR    build tree to use or create (default build/ in the repository)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEMO=${MODELFS_DEMO_DIR:-/tmp/modelfs-demo}
SCALE=${MODELFS_DEMO_SCALE:-medium}
BUILD=${MODELFS_BUILD_DIR:-$ROOT/build}
MAKE_MODELS="$ROOT/tests/support/make_models.py"
SEED=42

bold() { if [[ -t 1 ]]; then printf '\033[1m%s\033[0m\n' "$*"; else printf '%s\n' "$*"; fi; }
step() { echo; bold "## $*"; }
# Echoes a command, then runs it.
run() {
  local shown=() a
  for a in "$@"; do
    a=${a//"$DEMO"/\$DEMO}
    if [[ $a =~ [[:space:]] ]]; then shown+=("'$a'"); else shown+=("$a"); fi
  done
  bold "\$ ${shown[*]}"
  "$@"
}
die() { echo "demo: $*" >&2; exit 1; }

# --- 1. dependencies --------------------------------------------------------------------------
step "1. dependencies"
need_deps=0
command -v cmake >/dev/null 2>&1 || need_deps=1
command -v ninja >/dev/null 2>&1 || need_deps=1
command -v /usr/bin/python3 >/dev/null 2>&1 || need_deps=1
for p in g++ libfuse3-dev liblmdb-dev libxxhash-dev libssl-dev libspdlog-dev libcli11-dev \
         nlohmann-json3-dev libcurl4-openssl-dev libgtest-dev libtomlplusplus-dev fuse3 attr; do
  dpkg -s "$p" >/dev/null 2>&1 || { need_deps=1; break; }
done
# libfuse 3.17 (FUSE passthrough): the system's, or the one packaging/build-libfuse3 builds.
pkg-config --atleast-version=3.17 fuse3 2>/dev/null || "$ROOT/packaging/build-libfuse3" --check \
  || need_deps=1
if [[ $need_deps == 1 ]]; then
  run "$ROOT/packaging/install-deps"
else
  echo "build dependencies are installed"
fi

# --- 2. build ---------------------------------------------------------------------------------
step "2. build"
if [[ ! -f $BUILD/CMakeCache.txt ]]; then
  run cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
run cmake --build "$BUILD" --target modelfs -j"$(nproc)"
MODELFS="$BUILD/tools/modelfs"
[[ -x $MODELFS ]] || die "the build did not produce $MODELFS"

# --- 3. two tools with their own model folders --------------------------------------------------
step "3. a fake AUTOMATIC1111 and a fake ComfyUI (same seed: some models are byte-identical)"
if [[ -e $DEMO ]]; then
  # Only ever delete a folder this script made, and never through a mount (that would delete
  # the store's models): an earlier run that was killed may have left views mounted.
  if [[ -f $DEMO/.modelfs-demo ]]; then
    for m in $(awk -v d="$DEMO/" 'index($2, d) == 1 { print $2 }' /proc/mounts); do
      fusermount3 -uz "$m" 2>/dev/null || umount -l "$m"
    done
    rm -rf --one-file-system "$DEMO"
  elif [[ -d $DEMO && -z $(ls -A "$DEMO") ]]; then
    rmdir "$DEMO"
  else
    die "$DEMO exists and is not a modelfs demo folder; set MODELFS_DEMO_DIR to another path"
  fi
fi
mkdir -p "$DEMO"
touch "$DEMO/.modelfs-demo"
STORE="$DEMO/store"
A1111="$DEMO/stable-diffusion-webui"
COMFY="$DEMO/ComfyUI"
run "$MAKE_MODELS" install "$A1111" --tool a1111 --seed "$SEED" --scale "$SCALE"
run "$MAKE_MODELS" install "$COMFY" --tool comfyui --seed "$SEED" --scale "$SCALE"
echo
echo "model files the two tools hold:"
( cd "$DEMO" && find stable-diffusion-webui ComfyUI -type f \
    \( -name '*.safetensors' -o -name '*.pth' -o -name '*.ckpt' -o -name '*.pt' -o -name '*.bin' \) \
    -printf '  %10s  %p\n' | sort -k2 )
echo
echo "on disk before modelfs:"
du -sh "$A1111" "$COMFY" | sed "s|$DEMO|\$DEMO|; s/^/  /"

# --- 4. one store ------------------------------------------------------------------------------
step "4. import both into one store"
run "$MODELFS" --store "$STORE" init
run "$MODELFS" --store "$STORE" import "$A1111/models" "$A1111/embeddings" "$COMFY/models"
run "$MODELFS" --store "$STORE" ls
run "$MODELFS" --store "$STORE" stats
run "$MODELFS" --store "$STORE" show "$A1111/models/Stable-diffusion/v1-5-pruned-emaonly.safetensors"
run "$MODELFS" --store "$STORE" verify
echo
tools_bytes=$(find "$A1111" "$COMFY" -type f \( -name '*.safetensors' -o -name '*.pth' \) -printf '%s\n' \
  | awk '{ s += $1 } END { print s + 0 }')
store_bytes=$(du -sb "$STORE" | cut -f1)
awk -v t="$tools_bytes" -v s="$store_bytes" 'BEGIN {
  m = 1048576
  printf "the two tools hold %.1f MiB of model files; the whole store is %.1f MiB: %.1f MiB (%.0f%%) saved\n",
    t / m, s / m, (t - s) / m, (t > 0 ? 100 * (t - s) / t : 0) }'

# --- 5. each tool's own view -------------------------------------------------------------------
step "5. one mount, every tool's layout"
MNT="$DEMO/mnt"
mkdir -p "$MNT"
# Unmount on any exit, so the demo never leaves a dead mount behind.
trap '"$MODELFS" umount "$MNT" >/dev/null 2>&1 || true' EXIT
run "$MODELFS" --store "$STORE" mount "$MNT"
for _ in $(seq 50); do mountpoint -q "$MNT" && break; sleep 0.1; done
run ls "$MNT"
run ls "$MNT/comfyui/checkpoints" "$MNT/a1111/Stable-diffusion"
first=$(find "$MNT/comfyui/checkpoints" -maxdepth 1 -name '*.safetensors' | sort | head -n 1)
if [[ -n $first ]]; then
  name=$(basename "$first")
  run sha256sum "$MNT/comfyui/checkpoints/$name" "$MNT/a1111/Stable-diffusion/$name"
  echo "(both are the one blob in the store; the xattrs say which:)"
  run getfattr -d "$MNT/comfyui/checkpoints/$name" 2>/dev/null ||
    /usr/bin/python3 -c 'import os,sys; [print(a, "=", os.getxattr(sys.argv[1], a).decode()) for a in os.listxattr(sys.argv[1])]' "$MNT/comfyui/checkpoints/$name"
fi
echo
echo "(a tool saves a new LoRA into its own view; every other tool sees it, stored once:)"
python3 "$MAKE_MODELS" safetensors --kind lora --seed 4242 "$DEMO/downloaded.safetensors" >/dev/null
run cp "$DEMO/downloaded.safetensors" "$MNT/comfyui/loras/downloaded.safetensors"
for _ in $(seq 50); do [[ -e $MNT/a1111/Lora/downloaded.safetensors ]] && break; sleep 0.1; done
run sha256sum "$MNT/a1111/Lora/downloaded.safetensors" "$MNT/fooocus/loras/downloaded.safetensors"
run "$MODELFS" --store "$STORE" ls 'lora/*'
run "$MODELFS" umount "$MNT"
trap - EXIT

# --- 6. adopt the installs in place ----------------------------------------------------------
step "6. adopt: each tool's own models folder becomes its view, the duplicates go"
run "$MODELFS" --store "$STORE" adopt --dry-run "$A1111" "$COMFY"
trap 'for m in "$A1111/models" "$COMFY/models"; do "$MODELFS" umount "$m" >/dev/null 2>&1 || true; done' EXIT
run "$MODELFS" --store "$STORE" -q adopt --yes "$A1111" "$COMFY"
run "$MODELFS" --store "$STORE" adopted
echo "(the paths each tool had read the same bytes, now through its view:)"
run sha256sum "$A1111/models/Stable-diffusion/v1-5-pruned-emaonly.safetensors" \
  "$COMFY/models/checkpoints/v1-5-pruned-emaonly.safetensors"
run ls "$A1111/models/Lora"
run "$MODELFS" --store "$STORE" adopt --confirm "$A1111" "$COMFY"
echo
echo "(and back: unadopt gives each tool its plain models folder again)"
run "$MODELFS" --store "$STORE" unadopt "$A1111" "$COMFY"
run ls -l "$A1111/models/Lora"
trap - EXIT

step "done"
echo "the demo is in $DEMO (store: $STORE); run again to start afresh"
