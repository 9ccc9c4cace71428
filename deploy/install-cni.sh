#!/bin/sh
# Installs the lanlink CNI plugin and its conflist on the node. Runs as the
# DaemonSet's init container, with the node's CNI directories mounted under
# /host. Idempotent: every start of the DaemonSet pod re-installs, so an
# upgraded image also upgrades the plugin.
#
# Each file is written next to its target under a name the runtime ignores
# (a leading dot, a .tmp extension: libcni only loads *.conf, *.conflist and
# *.json) and then renamed over it, so the runtime never executes a
# half-copied binary nor reads a half-written conflist.
#
# Environment (defaults in brackets):
#   LANLINK_PLUGIN    the plugin binary to install  [/usr/local/bin/lanlink]
#   LANLINK_CONFLIST  the conflist to install       [/etc/lanlink/10-lanlink.conflist]
#                     (set but empty: install the plugin only, e.g. for
#                     Multus secondary mode, where the NetworkAttachmentDefinition
#                     carries the config)
#   CNI_BIN_DIR       the node's CNI plugin dir     [/host/opt/cni/bin]
#   CNI_CONF_DIR      the node's CNI config dir     [/host/etc/cni/net.d]
set -eu

plugin=${LANLINK_PLUGIN:-/usr/local/bin/lanlink}
conflist=${LANLINK_CONFLIST-/etc/lanlink/10-lanlink.conflist}
bin_dir=${CNI_BIN_DIR:-/host/opt/cni/bin}
conf_dir=${CNI_CONF_DIR:-/host/etc/cni/net.d}

[ -x "$plugin" ] || { echo "install-cni: $plugin is not an executable" >&2; exit 1; }
if [ -n "$conflist" ] && [ ! -s "$conflist" ]; then
    echo "install-cni: $conflist is missing or empty" >&2
    exit 1
fi

mkdir -p "$bin_dir" "$conf_dir"

install_atomically() { # <source> <target dir> <name> <mode>
    tmp="$2/.$3.tmp"
    cp "$1" "$tmp"
    chmod "$4" "$tmp"
    mv -f "$tmp" "$2/$3"
}

install_atomically "$plugin" "$bin_dir" lanlink 0755
echo "install-cni: installed $bin_dir/lanlink ($("$bin_dir/lanlink" --version 2>&1 | head -n 1))"
if [ -n "$conflist" ]; then
    name=$(basename "$conflist")
    install_atomically "$conflist" "$conf_dir" "$name" 0644
    echo "install-cni: installed $conf_dir/$name"
fi
