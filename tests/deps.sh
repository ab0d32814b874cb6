#!/usr/bin/env bash
# deps.sh - install the Debian packages the test suite needs, if missing.
# As root it installs them with apt-get (running apt-get update first);
# otherwise it lists what is missing: the tests that need them (and root)
# then skip with a reason.
set -euo pipefail
# qemu-system-x86: real guests; busybox-static, xz-utils, kmod, cpio: the
# guest's initramfs; iproute2, iputils-ping, iperf3, tcpdump, jq, procps:
# traffic and capture checks; isc-dhcp-client, dhcpcd-base (the client
# without its system service): real DHCP clients besides busybox's udhcpc;
# vde2, ethtool: benchmark peers.
pkgs=(qemu-system-x86 busybox-static xz-utils kmod cpio iproute2 iputils-ping
      iperf3 tcpdump jq procps isc-dhcp-client dhcpcd-base vde2 ethtool)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -gt 0 ] || exit 0
if [ "$(id -u)" != 0 ]; then
  echo "deps: missing packages (install as root, or run make test as root): ${missing[*]}" >&2
  exit 0
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
