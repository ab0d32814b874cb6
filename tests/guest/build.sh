#!/usr/bin/env bash
# Builds the tiny QEMU test guest used by the end-to-end tests:
#
#   tests/guest/build.sh OUTDIR
#
# produces OUTDIR/vmlinuz, OUTDIR/initramfs.cpio.gz and OUTDIR/manifest.
#
# The kernel is Debian's (the package behind the linux-image-amd64
# metapackage, fetched with `apt-get download`, never installed); the
# userland is busybox-static plus a small /init (see below). The outputs are
# written to temporary names and renamed into place last, so a half-built
# OUTDIR is never mistaken for a finished one. Running it again rebuilds.
#
# Optional environment:
#   TSGUEST_KERNEL_PKG  kernel package to use (default: resolved from
#                       linux-image-amd64, e.g. linux-image-6.1.0-NN-amd64)
#   TSGUEST_EXTRA_BINS  host programs copied into the guest together with
#                       their shared libraries when present on the host
#                       (default: "iperf3"; set to "" to skip)
#
# Guest kernel command line parameters understood by /init:
#   ts.ip=ADDR/PLEN   static IPv4 address on eth0
#   ts.gw=ADDR        default route
#   ts.dhcp=1         run udhcpc on eth0 (stays in the background to renew);
#                     its hook (/etc/udhcpc/default.script) writes the bound
#                     ADDR/PLEN to /run/tsguest-dhcp-lease (removed on
#                     deconfig) and events to /run/tsguest-dhcp.log
#   ts.hostname=NAME  hostname (also sent as DHCP option 12)
#   ts.ipv6=1         keep IPv6 enabled (default: disabled, so that the
#                     guest does not emit DAD/RS/MLD frames on its own)
#   ts.mtu=N          MTU of eth0
# When the shell on ttyS0 is ready, the guest prints a line "TSGUEST-READY".
set -euo pipefail

if [[ $# -ne 1 ]]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi
OUTDIR=$1
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)

log() { echo "tsguest-build: [${SECONDS}s] $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

for tool in apt-get apt-cache dpkg cpio gzip find; do
	command -v "$tool" >/dev/null || die "missing $tool (apt-get install -y cpio apt dpkg gzip findutils)"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tsguest-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# apt-get download as root drops to the _apt user, who must be able to
# write the download directory.
chmod 755 "$WORK"
mkdir -p "$WORK/dl"
chmod 777 "$WORK/dl"

# apt_download PKG: fetch PKG's .deb into $WORK/dl (apt-get update once on
# failure, as root only).
apt_download() {
	local pkg=$1
	if (cd "$WORK/dl" && apt-get download -q "$pkg") >"$WORK/apt.log" 2>&1; then
		return 0
	fi
	if [[ $(id -u) -eq 0 ]]; then
		log "apt-get download $pkg failed; running apt-get update"
		apt-get update -q >>"$WORK/apt.log" 2>&1 || true
		if (cd "$WORK/dl" && apt-get download -q "$pkg") >>"$WORK/apt.log" 2>&1; then
			return 0
		fi
	fi
	cat "$WORK/apt.log" >&2
	die "cannot download $pkg"
}

# ---------------------------------------------------------------- kernel --
resolve_kernel_pkg() {
	local dep
	dep=$(apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | sed -n 1p)
	if [[ -z $dep && $(id -u) -eq 0 ]]; then
		apt-get update -q >/dev/null 2>&1 || true
		dep=$(apt-cache depends linux-image-amd64 2>/dev/null |
			sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | sed -n 1p)
	fi
	[[ -n $dep ]] || die "cannot resolve linux-image-amd64 to a kernel package (apt-get update?)"
	echo "$dep"
}

KPKG=${TSGUEST_KERNEL_PKG:-$(resolve_kernel_pkg)}
log "kernel package $KPKG"
apt_download "$KPKG"
KDEB=$(ls "$WORK"/dl/"${KPKG}"_*.deb | sed -n 1p)
mkdir -p "$WORK/k"
dpkg -x "$KDEB" "$WORK/k"
VMLINUZ=$(ls "$WORK"/k/boot/vmlinuz-* | sed -n 1p)
KVER=${VMLINUZ##*/vmlinuz-}
MODDIR=$WORK/k/lib/modules/$KVER
[[ -d $MODDIR ]] || die "no modules directory for $KVER in $KDEB"
KDEBVER=$(dpkg-deb -f "$KDEB" Version)
log "kernel $KVER ($KDEBVER)"

# ---------------------------------------------------------------- rootfs --
ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,var/run,lib/modules,usr/share/udhcpc,etc/tsguest}
chmod 1777 "$ROOT/tmp"

# busybox: the installed busybox-static if any, else the package's binary.
BUSYBOX=
if dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep 'install ok installed' >/dev/null &&
	[[ -x /bin/busybox ]]; then
	BUSYBOX=/bin/busybox
else
	apt_download busybox-static
	mkdir -p "$WORK/bb"
	dpkg -x "$(ls "$WORK"/dl/busybox-static_*.deb | sed -n 1p)" "$WORK/bb"
	BUSYBOX=$WORK/bb/bin/busybox
fi
if command -v file >/dev/null && ! file -L "$BUSYBOX" | grep 'statically linked' >/dev/null; then
	die "$BUSYBOX is not statically linked (apt-get install busybox-static)"
fi
cp "$BUSYBOX" "$ROOT/bin/busybox"
chmod 755 "$ROOT/bin/busybox"
while read -r applet; do
	[[ -z $applet || $applet == bin/busybox ]] && continue
	mkdir -p "$ROOT/$(dirname "$applet")"
	[[ -e $ROOT/$applet ]] || ln -s /bin/busybox "$ROOT/$applet"
done < <("$ROOT/bin/busybox" --list-full)
[[ -e $ROOT/bin/sh ]] || ln -s /bin/busybox "$ROOT/bin/sh"

# ---------------------------------------------------------------- modules --
declare -A MODPATH=()
while IFS= read -r -d '' f; do
	name=${f##*/}
	name=${name%%.ko*}
	MODPATH[${name//-/_}]=$f
done < <(find "$MODDIR/kernel" -name '*.ko*' -print0)

builtin_mod() {
	[[ -f $MODDIR/modules.builtin ]] || return 1
	sed 's#.*/##; s#\.ko.*##; s#-#_#g' "$MODDIR/modules.builtin" | grep -x "$1" >/dev/null
}

# decompressed copy of module $1 in $WORK/mods/$1.ko
decompress_mod() {
	local name=$1 src=${MODPATH[$1]}
	local dst=$WORK/mods/$name.ko
	mkdir -p "$WORK/mods"
	[[ -f $dst ]] && return 0
	case $src in
	*.ko) cp "$src" "$dst" ;;
	*.ko.xz) xz -dc "$src" >"$dst" ;;
	*.ko.zst) zstd -qdc "$src" >"$dst" ;;
	*.ko.gz) gzip -dc "$src" >"$dst" ;;
	*) die "unknown module format $src" ;;
	esac
}

declare -A VISITED=()
ORDER=()
# visit NAME: depth-first, dependencies before dependents.
visit() {
	local name=${1//-/_}
	[[ -n ${VISITED[$name]:-} ]] && return 0
	VISITED[$name]=1
	if [[ -z ${MODPATH[$name]:-} ]]; then
		builtin_mod "$name" && return 0
		die "module $name is neither built in nor shipped in $KPKG"
	fi
	decompress_mod "$name"
	local deps dep
	deps=$(tr '\0' '\n' <"$WORK/mods/$name.ko" | sed -n 's/^depends=//p')
	for dep in ${deps//,/ }; do
		visit "$dep"
	done
	ORDER+=("$name")
}

for m in virtio_pci virtio_net af_packet; do
	if builtin_mod "$m"; then
		log "$m is built in"
		continue
	fi
	visit "$m"
done
: >"$ROOT/etc/tsguest/modules"
for m in "${ORDER[@]}"; do
	cp "$WORK/mods/$m.ko" "$ROOT/lib/modules/$m.ko"
	echo "$m" >>"$ROOT/etc/tsguest/modules"
done
log "modules: ${ORDER[*]}"

# ---------------------------------------------------------------- extras --
EXTRAS=()
for bin in ${TSGUEST_EXTRA_BINS-iperf3}; do
	p=$(command -v "$bin" 2>/dev/null) || continue
	[[ -n $p ]] || continue
	mkdir -p "$ROOT/usr/bin"
	rm -f "$ROOT/usr/bin/$bin"
	cp -L "$p" "$ROOT/usr/bin/$bin"
	# Shared libraries at the paths the binary asks for, plus the loader.
	while read -r lib; do
		[[ -n $lib && -f $lib ]] || continue
		mkdir -p "$ROOT$(dirname "$lib")"
		[[ -e $ROOT$lib ]] || cp -L "$lib" "$ROOT$lib"
	done < <(ldd "$p" 2>/dev/null | sed -n 's#.*=> \(/[^ ]*\) .*#\1#p; s#^[[:space:]]*\(/[^ ]*\) (.*#\1#p')
	EXTRAS+=("$bin")
done
[[ ${#EXTRAS[@]} -eq 0 ]] || log "extra programs: ${EXTRAS[*]}"

# ---------------------------------------------------------------- config --
cat >"$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/:/bin/false
EOF
cat >"$ROOT/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
echo "127.0.0.1 localhost" >"$ROOT/etc/hosts"
: >"$ROOT/etc/resolv.conf"

cat >"$ROOT/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
# udhcpc lease hook: applies the lease to $interface with ip(8).
# Events go to /run/tsguest-dhcp.log and the kernel log; to the console only
# until the guest is ready, so that they do not land in a command's output.
note() {
	echo "tsguest: dhcp $*" >>/run/tsguest-dhcp.log
	echo "<6>tsguest: dhcp $*" >/dev/kmsg 2>/dev/null
	[ -e /run/tsguest-ready ] || echo "tsguest: dhcp $*" >/dev/console
}
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	rm -f /run/tsguest-dhcp-lease
	note "deconfig $interface"
	;;
bound|renew)
	plen=32
	if [ -n "$subnet" ]; then
		plen=$(ipcalc -p "$ip" "$subnet" | sed 's/PREFIX=//')
	fi
	if [ "$1" = bound ]; then
		ip -4 addr flush dev "$interface"
	fi
	ip addr replace "$ip/$plen" ${broadcast:+broadcast $broadcast} dev "$interface"
	if [ -n "$mtu" ]; then
		ip link set "$interface" mtu "$mtu"
	fi
	if [ -n "$router" ]; then
		while ip -4 route del default dev "$interface" 2>/dev/null; do :; done
		for r in $router; do
			ip route add default via "$r" dev "$interface"
			break
		done
	fi
	: >/etc/resolv.conf
	for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
	[ -n "$domain" ] && echo "search $domain" >>/etc/resolv.conf
	echo "$ip/$plen" >/run/tsguest-dhcp-lease
	note "$1 $ip/$plen router=${router:-none} server=${serverid:-?} lease=${lease:-?} on $interface"
	;;
leasefail | nak)
	note "$1 on $interface${message:+: $message}"
	;;
esac
exit 0
EOF
chmod 755 "$ROOT/usr/share/udhcpc/default.script"
# Debian's busybox looks for /etc/udhcpc/default.script; init passes -s.
mkdir -p "$ROOT/etc/udhcpc"
cp -p "$ROOT/usr/share/udhcpc/default.script" "$ROOT/etc/udhcpc/default.script"

# rc for the interactive shell: no prompts, no echo, then the ready marker.
cat >"$ROOT/etc/tsguest/shrc" <<'EOF'
PS1=''
PS2=''
PS4='+ '
# No job control: no "[1]+ Done" notices in later commands' output; ^C
# still interrupts the foreground command, background jobs ignore it.
set +m
unset ENV
stty -echo 2>/dev/null
: >/run/tsguest-ready
cd /root
echo TSGUEST-READY
EOF

cat >"$ROOT/init" <<'EOF'
#!/bin/sh
# tapswitch test guest init.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export HOME=/root TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec 0</dev/console 1>/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
echo 1 >/proc/sys/kernel/printk

TS_IP= TS_GW= TS_DHCP= TS_HOST= TS_IPV6= TS_MTU=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	ts.ip=*) TS_IP=${arg#ts.ip=} ;;
	ts.gw=*) TS_GW=${arg#ts.gw=} ;;
	ts.dhcp=*) TS_DHCP=${arg#ts.dhcp=} ;;
	ts.hostname=*) TS_HOST=${arg#ts.hostname=} ;;
	ts.ipv6=*) TS_IPV6=${arg#ts.ipv6=} ;;
	ts.mtu=*) TS_MTU=${arg#ts.mtu=} ;;
	esac
done
[ "$TS_DHCP" = 0 ] && TS_DHCP=
[ "$TS_IPV6" = 0 ] && TS_IPV6=

hostname "${TS_HOST:-tsguest}"
if [ -z "$TS_IPV6" ] && [ -e /proc/sys/net/ipv6/conf/default/disable_ipv6 ]; then
	echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6
	echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6
fi

for m in $(cat /etc/tsguest/modules); do
	insmod /lib/modules/$m.ko || echo "tsguest: insmod $m failed"
done
ip link set lo up

# Wait (up to ~5 s) for the NIC, if the VM has one.
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do
	if ! grep -q 0x1af4 /sys/bus/pci/devices/*/vendor 2>/dev/null; then
		break
	fi
	sleep 0.1
	i=$((i + 1))
done

if [ -e /sys/class/net/eth0 ]; then
	[ -n "$TS_MTU" ] && ip link set eth0 mtu "$TS_MTU"
	ip link set eth0 up
	if [ -n "$TS_IP" ]; then
		ip addr add "$TS_IP" dev eth0 || echo "tsguest: cannot set address $TS_IP"
	fi
	if [ -n "$TS_GW" ]; then
		ip route add default via "$TS_GW" || echo "tsguest: cannot set gateway $TS_GW"
	fi
	if [ -n "$TS_DHCP" ]; then
		# Foreground until a lease (or ~10 s of tries), then background.
		udhcpc -i eth0 -s /etc/udhcpc/default.script -t 10 -T 1 -A 3 -b -S -x "hostname:${TS_HOST:-tsguest}" \
			-p /run/udhcpc.eth0.pid >>/run/udhcpc.log 2>&1 </dev/null
	fi
elif [ -n "$TS_IP$TS_DHCP" ]; then
	echo "tsguest: no eth0"
fi

# Interactive shell on the serial line (job control via cttyhack/setsid).
ENV=/etc/tsguest/shrc setsid cttyhack sh
echo "tsguest: shell exited, powering off"
poweroff -f
EOF
chmod 755 "$ROOT/init"

if [[ $(id -u) -eq 0 ]]; then
	mknod -m 600 "$ROOT/dev/console" c 5 1
	mknod -m 666 "$ROOT/dev/null" c 1 3
fi

# ---------------------------------------------------------------- output --
(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z |
	cpio --null -o -H newc -R 0:0 --quiet) | gzip -6 >"$OUTDIR/.initramfs.cpio.gz.tmp"
cp "$VMLINUZ" "$OUTDIR/.vmlinuz.tmp"
{
	echo "kernel_package=$KPKG"
	echo "kernel_package_version=$KDEBVER"
	echo "kernel_version=$KVER"
	echo "modules=${ORDER[*]}"
	echo "busybox=$("$ROOT/bin/busybox" --help 2>&1 | sed -n 1p)"
	echo "extras=${EXTRAS[*]}"
} >"$OUTDIR/.manifest.tmp"
mv -f "$OUTDIR/.manifest.tmp" "$OUTDIR/manifest"
mv -f "$OUTDIR/.vmlinuz.tmp" "$OUTDIR/vmlinuz"
mv -f "$OUTDIR/.initramfs.cpio.gz.tmp" "$OUTDIR/initramfs.cpio.gz"
log "built $OUTDIR/vmlinuz and $OUTDIR/initramfs.cpio.gz ($(du -h "$OUTDIR/initramfs.cpio.gz" | cut -f1))"
