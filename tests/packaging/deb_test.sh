#!/usr/bin/env bash
# The .deb end to end: build it with CPack, install it with dpkg, mount through
# `mount -t fuse.modelfs` with options and through an fstab entry with `mount -a` (a temporary
# fstab, -T: /etc/fstab is never touched), read a model, unmount, purge the package.
#
#   deb_test.sh BUILD_DIR MAKE_MODELS_PY
#
# Exit 77 (ctest: skipped) without root, /dev/fuse, dpkg or mount.fuse3, or when a modelfs
# package is already installed (it is not this test's to replace). Whatever happens, the trap
# unmounts what it mounted and purges the package it installed.
set -euo pipefail

build=$(cd "$1" && pwd)
make_models=$2

skip() { echo "deb_test: skipped: $*"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root (dpkg -i, mount)"
[[ -e /dev/fuse ]] || skip "no /dev/fuse"
command -v dpkg >/dev/null && command -v cpack >/dev/null || skip "no dpkg or cpack"
command -v dpkg-shlibdeps >/dev/null || skip "no dpkg-shlibdeps (dpkg-dev)"
# The sanitizer stage of .ci/run builds a second tree; the package comes from the plain one.
! grep -qs '^MODELFS_SANITIZE:BOOL=ON' "$build/CMakeCache.txt" || skip "a sanitizer build"
[[ -x /sbin/mount.fuse3 || -x /usr/sbin/mount.fuse3 ]] || skip "no mount.fuse3 (fuse3)"
if [[ $(dpkg-query -W -f='${db:Status-Status}' modelfs 2>/dev/null || true) != not-installed &&
      -n $(dpkg-query -W -f='${db:Status-Status}' modelfs 2>/dev/null || true) ]]; then
  skip "a modelfs package is already installed"
fi

# Field 5 of mountinfo is the mount point; the filesystem type follows the " - ".
is_mounted() { awk -v m="$1" '$5 == m && / - fuse\.modelfs / { f = 1 } END { exit !f }' /proc/self/mountinfo; }
mount_count() { awk -v m="$1" '$5 == m && / - fuse\.modelfs / { n++ } END { print n + 0 }' /proc/self/mountinfo; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/modelfs-deb.XXXXXX")
installed=0
system_store=0
fuse_mode=$(stat -c %a /dev/fuse)
cleanup() {
  local rc=$?
  [[ $(stat -c %a /dev/fuse) == "$fuse_mode" ]] || chmod "$fuse_mode" /dev/fuse
  if [[ -n ${unit_pid:-} ]]; then kill -9 "$unit_pid" 2>/dev/null || true; fi
  for m in "$tmp/mnt" "$tmp/mnt2" "$tmp/mnt3"; do
    if is_mounted "$m"; then
      fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    fi
  done
  if [[ $system_store -eq 1 ]]; then
    rm -rf --one-file-system /var/lib/modelfs/store
  fi
  if [[ $installed -eq 1 ]]; then
    dpkg --purge modelfs >/dev/null 2>&1 || echo "deb_test: dpkg --purge modelfs failed" >&2
  fi
  # Never through a mount that would not go: that would delete the store's models.
  rm -rf --one-file-system "$tmp"
  exit "$rc"
}
trap cleanup EXIT
fail() { echo "deb_test: FAILED: $*" >&2; exit 1; }
step() { echo "--- $*"; }
wait_mounted() {  # MOUNTPOINT yes|no
  for _ in $(seq 100); do
    if is_mounted "$1"; then [[ $2 == yes ]] && return 0
    else [[ $2 == no ]] && return 0; fi
    sleep 0.05
  done
  return 1
}

step "cpack -G DEB"
(cd "$build" && cpack -G DEB -B "$tmp/pkg" >"$tmp/cpack.log" 2>&1) || { cat "$tmp/cpack.log"; fail "cpack"; }
deb=$(ls "$tmp"/pkg/modelfs_*.deb)
echo "$deb"
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
[[ $depends == *fuse3* ]] || fail "Depends lacks fuse3"
[[ $depends == *liblmdb* ]] || fail "Depends lacks the libraries (dpkg-shlibdeps): $depends"
contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/modelfs ./usr/lib/systemd/system/modelfs@.service \
         ./usr/lib/systemd/system/modelfs-pull@.service \
         ./usr/share/man/man1/modelfs.1.gz ./etc/modelfs/config.toml \
         ./usr/share/doc/modelfs/copyright; do
  grep -q " $f\$" <<<"$contents" || fail "the package lacks $f"
done
dpkg-deb -I "$deb" conffiles | grep -qx /etc/modelfs/config.toml || fail "config.toml is no conffile"
if command -v lintian >/dev/null; then
  lint=$(lintian --fail-on error,warning "$deb" 2>&1) || fail "lintian: $lint"
fi

step "dpkg -i"
installed=1
dpkg -i "$deb" >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log"; fail "dpkg -i"; }
[[ $(command -v modelfs) == /usr/bin/modelfs ]] || fail "modelfs is not /usr/bin/modelfs"
getent passwd modelfs >/dev/null || fail "no modelfs service user"
[[ $(stat -c '%U:%G %a' /var/lib/modelfs) == "modelfs:modelfs 750" ]] ||
  fail "/var/lib/modelfs is $(stat -c '%U:%G %a' /var/lib/modelfs), expected modelfs:modelfs 750"
man -l /usr/share/man/man1/modelfs.1.gz 2>/dev/null | grep -q "fuse.modelfs" ||
  zcat /usr/share/man/man1/modelfs.1.gz | grep -q "fuse.modelfs" || fail "man page"

step "a store with one model"
export MODELFS_CONFIG=/dev/null
mkdir -p "$tmp/src/checkpoints" "$tmp/mnt" "$tmp/mnt2"
python3 "$make_models" safetensors "$tmp/src/checkpoints/base.safetensors" --kind checkpoint \
  --size 1048576 --seed 7 >/dev/null
modelfs --store "$tmp/store" init >/dev/null
modelfs -q --store "$tmp/store" import "$tmp/src" >/dev/null

step "mount -t fuse.modelfs with options"
mount -t fuse.modelfs "$tmp/store" "$tmp/mnt" \
  -o view=comfyui,allow_other,_netdev,nofail,noatime,config=/dev/null
wait_mounted "$tmp/mnt" yes || fail "not mounted"
cmp "$tmp/src/checkpoints/base.safetensors" "$tmp/mnt/checkpoints/base.safetensors" ||
  fail "read through the mount differs"
umount "$tmp/mnt"
wait_mounted "$tmp/mnt" no || fail "still mounted after umount"

step "fstab entry, mount -a -T"
printf '%s %s fuse.modelfs view=comfyui,allow_other,_netdev,nofail,config=/dev/null 0 0\n' \
  "$tmp/store" "$tmp/mnt2" >"$tmp/fstab"
mount -a -T "$tmp/fstab"
wait_mounted "$tmp/mnt2" yes || fail "fstab entry not mounted"
# The mount's source is the store, as fstab says: a second `mount -a` sees it and does nothing.
mount -a -T "$tmp/fstab" || fail "a second mount -a failed"
[[ $(mount_count "$tmp/mnt2") -eq 1 ]] ||
  fail "a second mount -a mounted the store again"
cmp "$tmp/src/checkpoints/base.safetensors" "$tmp/mnt2/checkpoints/base.safetensors" ||
  fail "read through the fstab mount differs"
umount "$tmp/mnt2"
wait_mounted "$tmp/mnt2" no || fail "still mounted after umount"

step "multi-user: the service user's store in /var/lib/modelfs"
as_service() { setpriv --reuid=modelfs --regid=modelfs --init-groups -- "$@"; }
# The service user reaches the model and the mount point; the rest of $tmp stays root's.
chmod 0755 "$tmp" "$tmp/src" "$tmp/src/checkpoints"
install -d -o modelfs -g modelfs "$tmp/mnt3"
system_store=1
as_service modelfs --store /var/lib/modelfs/store init >/dev/null
as_service modelfs -q --store /var/lib/modelfs/store import "$tmp/src" >/dev/null
if ! grep -qx '[[:space:]]*user_allow_other[[:space:]]*' /etc/fuse.conf 2>/dev/null; then
  # Not root, no user_allow_other: refused up front, saying what to add where.
  if out=$(as_service modelfs /var/lib/modelfs/store "$tmp/mnt3" -o allow_other 2>&1); then
    fail "allow_other was accepted without user_allow_other in /etc/fuse.conf"
  fi
  grep -q "user_allow_other" <<<"$out" || fail "allow_other refused without explaining: $out"
fi
# Debian's udev rule makes /dev/fuse 0666; some containers (this CI's) leave it 0600, and then
# only root can mount. Give it Debian's mode for this test (the trap puts the old one back).
[[ $fuse_mode == 666 ]] || chmod 0666 /dev/fuse
as_service modelfs /var/lib/modelfs/store "$tmp/mnt3" -o view=comfyui
wait_mounted "$tmp/mnt3" yes || fail "the service user's mount is not there"
as_service cmp "$tmp/src/checkpoints/base.safetensors" "$tmp/mnt3/checkpoints/base.safetensors" ||
  fail "the service user reads other bytes"
as_service fusermount3 -u "$tmp/mnt3"
wait_mounted "$tmp/mnt3" no || fail "the service user's mount is still there"

step "modelfs@.service, run as systemd would (there is no systemd here): start, reload, stop, crash"
unit=/usr/lib/systemd/system/modelfs@.service
[[ -f $unit ]] || unit=/lib/systemd/system/modelfs@.service
unit_line() { sed -n "s/^$1=//p" "$unit"; }
[[ $(unit_line User) == modelfs ]] || fail "the unit does not run as the modelfs user"
cat >"$tmp/unit.conf" <<CONF
MODELFS_STORE=/var/lib/modelfs/store
MODELFS_MOUNTPOINT=$tmp/mnt3
MODELFS_OPTIONS=view=comfyui,config=/dev/null
CONF
# The unit's own command lines, with its EnvironmentFile's variables expanded as systemd does.
unit_cmd() {
  local line
  line=$(unit_line "$1")
  line=${line#-}  # systemd's "ignore failure" prefix
  (set -a; . "$tmp/unit.conf"; eval "echo $line")
}
start_cmd=$(unit_cmd ExecStart)
stop_post=$(unit_cmd ExecStopPost)
# setpriv execs the daemon, so $! is the daemon's pid (the unit's MAINPID). Every Exec line runs
# as User=, ExecStopPost too.
# shellcheck disable=SC2086  # word splitting is what systemd does to these lines
setpriv --reuid=modelfs --regid=modelfs --init-groups -- $start_cmd >"$tmp/unit.log" 2>&1 &
unit_pid=$!
wait_mounted "$tmp/mnt3" yes || { cat "$tmp/unit.log"; fail "ExecStart did not mount"; }
as_service cmp "$tmp/src/checkpoints/base.safetensors" "$tmp/mnt3/checkpoints/base.safetensors" ||
  fail "reads through the unit's mount differ"
kill -HUP "$unit_pid"  # ExecReload
sleep 0.3
is_mounted "$tmp/mnt3" || fail "SIGHUP (systemctl reload) unmounted"
grep -q "SIGHUP: config re-read" "$tmp/unit.log" || { cat "$tmp/unit.log"; fail "no reload in the log"; }
kill -TERM "$unit_pid"  # systemctl stop
rc=0; wait "$unit_pid" || rc=$?
unit_pid=
[[ $rc == 0 ]] || { cat "$tmp/unit.log"; fail "the daemon exited $rc on SIGTERM (the unit would be failed)"; }
wait_mounted "$tmp/mnt3" no || fail "SIGTERM left the mount"
# shellcheck disable=SC2086
as_service $stop_post 2>/dev/null || grep -q '^ExecStopPost=-' "$unit" ||
  fail "ExecStopPost fails with nothing mounted and the unit does not ignore that ('-')"
# A crash: kill -9 leaves a dead mount, which ExecStopPost clears.
# shellcheck disable=SC2086
setpriv --reuid=modelfs --regid=modelfs --init-groups -- $start_cmd >"$tmp/unit.log" 2>&1 &
unit_pid=$!
wait_mounted "$tmp/mnt3" yes || { cat "$tmp/unit.log"; fail "ExecStart did not mount again"; }
kill -9 "$unit_pid"
wait "$unit_pid" 2>/dev/null || true
unit_pid=
is_mounted "$tmp/mnt3" || fail "expected a dead mount after kill -9"
# shellcheck disable=SC2086
as_service $stop_post || fail "ExecStopPost failed on the dead mount"
wait_mounted "$tmp/mnt3" no || fail "ExecStopPost left the dead mount"
ls "$tmp/mnt3" >/dev/null || fail "the mount point is not usable after ExecStopPost"
chmod "$fuse_mode" /dev/fuse

# The store's folder: a member of the group reads it but cannot change it; others cannot enter.
gid=$(getent group modelfs | cut -d: -f3)
as_member() { setpriv --reuid=65534 --regid="$gid" --clear-groups -- "$@"; }
as_member ls /var/lib/modelfs/store >/dev/null || fail "a modelfs group member cannot read /var/lib/modelfs"
if as_member touch /var/lib/modelfs/store/x 2>/dev/null; then
  fail "a modelfs group member could write the store"
fi
if setpriv --reuid=65534 --regid=65534 --clear-groups -- ls /var/lib/modelfs >/dev/null 2>&1; then
  fail "a user outside the modelfs group can read /var/lib/modelfs"
fi
# Through an allow_other mount, another user reads models; the kernel's permission checks
# (default_permissions) keep them from changing the store.
mount -t fuse.modelfs /var/lib/modelfs/store "$tmp/mnt3" -o view=comfyui,allow_other,config=/dev/null
wait_mounted "$tmp/mnt3" yes || fail "the system store's mount is not there"
as_member cmp "$tmp/src/checkpoints/base.safetensors" "$tmp/mnt3/checkpoints/base.safetensors" ||
  fail "another user cannot read a model through the allow_other mount"
if as_member rm -f "$tmp/mnt3/checkpoints/base.safetensors" 2>/dev/null ||
   as_member touch "$tmp/mnt3/checkpoints/new.safetensors" 2>/dev/null; then
  fail "another user changed the store through the mount"
fi
umount "$tmp/mnt3"
wait_mounted "$tmp/mnt3" no || fail "the system store's mount is still there"
rm -rf --one-file-system /var/lib/modelfs/store
system_store=0

step "dpkg --purge"
installed=0
dpkg --purge modelfs >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log"; fail "dpkg --purge"; }
[[ ! -e /usr/bin/modelfs ]] || fail "/usr/bin/modelfs is still there"
[[ ! -e /etc/modelfs/config.toml ]] || fail "/etc/modelfs/config.toml survived the purge"
! getent passwd modelfs >/dev/null || fail "the modelfs user survived the purge"
[[ ! -e /var/lib/modelfs ]] || fail "the empty /var/lib/modelfs survived the purge"
echo "deb_test: ok"
