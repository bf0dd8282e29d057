#!/bin/sh
# Writes modelfs.1 (roff) from the built program's own --help texts, so the man page never
# disagrees with the program (help2man is not a build dependency).
#   gen-manpage.sh BINARY VERSION OUT
set -eu
bin=$1 version=$2 out=$3

# Plain text in a roff .nf block: backslashes doubled, a leading . or ' made literal.
roff() { sed -e 's/\\/\\e/g' -e "s/^\([.']\)/\\\\\&\1/"; }

{
    printf '.TH MODELFS 1 "" "modelfs %s" "User Commands"\n' "$version"
    printf '.SH NAME\nmodelfs \\- one copy of every AI model, every tool its own folder layout\n'
    printf '.SH SYNOPSIS\n.B modelfs\n[\\fIOPTIONS\\fR] \\fISUBCOMMAND\\fR ...\n.br\n'
    printf '.B modelfs\n\\fISTORE MOUNTPOINT\\fR [\\fB\\-o\\fR \\fIOPTIONS\\fR]\n'
    printf '.SH DESCRIPTION\n.nf\n'
    MODELFS_CONFIG=/dev/null "$bin" --help | roff
    printf '.fi\n.SH SUBCOMMANDS\n'
    # The subcommand names: the indented words under "Subcommands:" in --help.
    for sub in $(MODELFS_CONFIG=/dev/null "$bin" --help |
                 awk 'toupper($0) ~ /^SUBCOMMANDS:/ {on = 1; next} on && /^  [a-z]/ {print $1} on && /^$/ {on = 0}'); do
        printf '.SS %s\n.nf\n' "$sub"
        # Each subcommand's help ends by pointing at the global text, which DESCRIPTION has.
        MODELFS_CONFIG=/dev/null "$bin" "$sub" --help | grep -v '^Settings, the store.s location' | roff
        printf '.fi\n'
    done
    printf '.SH EXAMPLES\n.nf\n'
    roff <<'TEXT'
Create a store and import a tool's models folder (copied, deduplicated):
  modelfs init
  modelfs import ~/stable-diffusion-webui/models

What is there, and everything about one model:
  modelfs ls 'lora/*xl*'
  modelfs show lora/detail_tweaker

Show ComfyUI its own layout, then unmount:
  modelfs mount --view comfyui ~/ComfyUI/models
  modelfs umount ~/ComfyUI/models

Adopt installed tools in place (see the savings first):
  modelfs adopt --dry-run ~/stable-diffusion-webui ~/ComfyUI
  modelfs adopt ~/stable-diffusion-webui ~/ComfyUI

Register a remote model without downloading it, then download it:
  modelfs add hf://stabilityai/sdxl-vae/sdxl_vae.safetensors --as vae/sdxl-vae
  modelfs fetch vae/sdxl-vae

Pin the exact versions a project uses, elsewhere too:
  modelfs lock --view comfyui -o project.lock
  modelfs apply project.lock
TEXT
    printf '.fi\n.SH FSTAB AND SYSTEMD\n.nf\n'
    roff <<'TEXT'
An fstab line mounts a store at boot (mount.fuse3 runs `modelfs STORE MOUNTPOINT -o OPTIONS`):

  /var/lib/modelfs/store /srv/models fuse.modelfs view=comfyui,allow_other,_netdev,nofail 0 0

Options: view=NAME, config=FILE, lock=FILE, read_backend=auto|splice, allow_other, debug, foreground, and the kernel
flags ro, nosuid, nodev, noexec, noatime, nodiratime, sync, async, dirsync; fstab's own
(defaults, _netdev, nofail, x-systemd.*) are ignored.

systemd: /etc/modelfs/NAME.conf, then `systemctl enable --now modelfs@NAME`.
TEXT
    printf '.fi\n.SH FILES\n'
    printf '/etc/modelfs/config.toml, ~/.config/modelfs/config.toml, STORE/config.toml, /etc/modelfs/NAME.conf\n'
    printf '.SH SEE ALSO\n.BR mount.fuse3 (8),\n.BR fstab (5),\n.BR fusermount3 (1)\n'
} >"$out"
