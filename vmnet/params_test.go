package vmnet

import (
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseMode(t *testing.T) {
	for s, want := range map[string]Mode{"host": ModeHost, "shared": ModeShared, "bridged": ModeBridged} {
		m, err := ParseMode(s)
		if m != want || err != nil || m.String() != s {
			t.Errorf("ParseMode(%q) = %v, %v, want %v", s, m, err, want)
		}
	}
	for _, s := range []string{"", "Shared", "nat", "1001"} {
		if _, err := ParseMode(s); err == nil || !strings.Contains(err.Error(), "host, shared or bridged") {
			t.Errorf("ParseMode(%q) = %v, want an error listing the modes", s, err)
		}
	}
	if s := Mode(0).String(); s != "mode(0)" {
		t.Errorf("Mode(0).String() = %q", s)
	}
	if ModeHost != 1000 || ModeShared != 1001 || ModeBridged != 1002 {
		t.Error("modes must have vmnet's operating_modes_t values")
	}
}

func TestUUID(t *testing.T) {
	const s = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
	u, err := ParseUUID(s)
	if err != nil || u.String() != s || u.IsZero() {
		t.Fatalf("ParseUUID(%q) = %v, %v", s, u, err)
	}
	if up, err := ParseUUID(strings.ToUpper(s)); err != nil || up != u {
		t.Errorf("upper case: %v, %v", up, err)
	}
	if u[0] != 0x6b || u[15] != 0xc8 {
		t.Errorf("bytes %x", u)
	}
	for _, bad := range []string{
		"", "6ba7b8109dad11d180b400c04fd430c8", "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}",
		"6ba7b810-9dad-11d1-80b4-00c04fd430c", "6ba7b810-9dad-11d1-80b4-00c04fd430c8a",
		"6ba7b810+9dad-11d1-80b4-00c04fd430c8", "6ba7b810-9dad-11d1-80b4-00c04fd430cg", "random",
	} {
		if _, err := ParseUUID(bad); err == nil {
			t.Errorf("ParseUUID(%q) succeeded", bad)
		}
	}
	r, err := RandomUUID()
	if err != nil || r.IsZero() || r[6]>>4 != 4 || r[8]>>6 != 2 {
		t.Errorf("RandomUUID = %v, %v: want a version 4, variant 1 UUID", r, err)
	}
	if r2, _ := RandomUUID(); r2 == r {
		t.Error("two random UUIDs are equal")
	}
	if !(UUID{}).IsZero() {
		t.Error("zero UUID is not zero")
	}
}

func mask(s string) net.IPMask { return net.IPMask(net.ParseIP(s).To4()) }

func TestDarwinParams(t *testing.T) {
	id := UUID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	nid := UUID{0xaa, 15: 0xbb}
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"zero: shared, macOS chooses", Config{}, []string{"vmnet_operation_mode_key=1001"}},
		{"host", Config{Mode: ModeHost}, []string{"vmnet_operation_mode_key=1000"}},
		{"socket_vmnet defaults", Config{StartAddr: a("192.168.105.1"), Mask: mask("255.255.255.0")}, []string{
			"vmnet_operation_mode_key=1001", `vmnet_start_address_key="192.168.105.1"`,
			`vmnet_end_address_key="192.168.105.254"`, `vmnet_subnet_mask_key="255.255.255.0"`,
		}},
		{"explicit range, /16", Config{Mode: ModeHost, StartAddr: a("10.20.0.1"), EndAddr: a("10.20.1.200"), Mask: mask("255.255.0.0")}, []string{
			"vmnet_operation_mode_key=1000", `vmnet_start_address_key="10.20.0.1"`,
			`vmnet_end_address_key="10.20.1.200"`, `vmnet_subnet_mask_key="255.255.0.0"`,
		}},
		{"/16 default end", Config{StartAddr: a("172.16.0.1"), Mask: mask("255.255.0.0")}, []string{
			"vmnet_operation_mode_key=1001", `vmnet_start_address_key="172.16.0.1"`,
			`vmnet_end_address_key="172.16.255.254"`, `vmnet_subnet_mask_key="255.255.0.0"`,
		}},
		{"mtu and interface id", Config{MTU: 9000, InterfaceID: id}, []string{
			"vmnet_operation_mode_key=1001", "vmnet_mtu_key=9000",
			"vmnet_interface_id_key=01020304-0506-0708-090a-0b0c0d0e0f10",
		}},
		{"bridged", Config{Mode: ModeBridged, Bridge: "en0", InterfaceID: id}, []string{
			"vmnet_operation_mode_key=1002", `vmnet_shared_interface_name_key="en0"`,
			"vmnet_interface_id_key=01020304-0506-0708-090a-0b0c0d0e0f10",
		}},
		{"isolated host network", Config{Mode: ModeHost, NetworkID: nid}, []string{
			"vmnet_operation_mode_key=1000", "vmnet_network_identifier_key=aa000000-0000-0000-0000-0000000000bb",
		}},
		{"isolated with host addresses", Config{Mode: ModeHost, NetworkID: nid, Addrs: []netip.Prefix{
			netip.MustParsePrefix("192.168.200.1/24"), netip.MustParsePrefix("fd00::1/64"),
		}}, []string{
			"vmnet_operation_mode_key=1000", "vmnet_network_identifier_key=aa000000-0000-0000-0000-0000000000bb",
			`vmnet_host_ip_address_key="192.168.200.1"`, `vmnet_host_subnet_mask_key="255.255.255.0"`,
			`vmnet_host_ipv6_address_key="fd00::1"`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps, err := darwinParams(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range ps {
				got = append(got, p.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("params\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestDarwinParamsErrors(t *testing.T) {
	a := netip.MustParseAddr
	nid := UUID{1}
	gw := Config{StartAddr: a("192.168.105.1"), Mask: mask("255.255.255.0")}
	with := func(f func(*Config)) Config { c := gw; f(&c); return c }
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown mode", Config{Mode: 7}, "unknown vmnet mode 7"},
		{"MAC", Config{MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}}, "set InterfaceID"},
		{"negative MTU", Config{MTU: -1}, "negative"},
		{"bridged without interface", Config{Mode: ModeBridged}, "needs Bridge"},
		{"bridged with subnet", with(func(c *Config) { c.Mode = ModeBridged; c.Bridge = "en0" }), "no StartAddr"},
		{"bridged with MTU", Config{Mode: ModeBridged, Bridge: "en0", MTU: 9000}, "no MTU"},
		{"bridged with network id", Config{Mode: ModeBridged, Bridge: "en0", NetworkID: nid}, "host mode only"},
		{"bridged with addrs", Config{Mode: ModeBridged, Bridge: "en0", Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")}}, "no Addrs"},
		{"bridge in shared mode", Config{Bridge: "en0"}, "no meaning in shared mode"},
		{"network id in shared mode", Config{NetworkID: nid}, "host mode only, not shared"},
		{"addrs without network id", Config{Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")}}, "isolated network"},
		{"two IPv4 host addrs", Config{Mode: ModeHost, NetworkID: nid, Addrs: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.1/8"), netip.MustParsePrefix("10.0.0.2/8")}}, "at most one IPv4"},
		{"invalid host addr", Config{Mode: ModeHost, NetworkID: nid, Addrs: []netip.Prefix{{}}}, "invalid address prefix"},
		{"start without mask", Config{StartAddr: a("192.168.105.1")}, "go together"},
		{"mask without start", Config{Mask: mask("255.255.255.0")}, "go together"},
		{"end alone", Config{EndAddr: a("192.168.105.254")}, "go together"},
		{"IPv6 start", Config{StartAddr: a("fd00::1"), Mask: mask("255.255.255.0")}, "not IPv4"},
		{"IPv6 mask", Config{StartAddr: a("192.168.105.1"), Mask: net.CIDRMask(64, 128)}, "not an IPv4 mask"},
		{"holey mask", with(func(c *Config) { c.Mask = mask("255.0.255.0") }), "not contiguous"},
		{"/31", with(func(c *Config) { c.Mask = mask("255.255.255.254") }), "no room"},
		{"/0", with(func(c *Config) { c.Mask = mask("0.0.0.0") }), "no room"},
		{"start is network", with(func(c *Config) { c.StartAddr = a("192.168.105.0") }), "network or broadcast"},
		{"start is broadcast", with(func(c *Config) { c.StartAddr = a("192.168.105.255") }), "network or broadcast"},
		{"public subnet", Config{StartAddr: a("198.18.0.1"), Mask: mask("255.255.255.0")}, "not private"},
		{"subnet spills out of 192.168/16", Config{StartAddr: a("192.168.0.1"), Mask: mask("255.254.0.0")}, "not private"},
		{"end outside", with(func(c *Config) { c.EndAddr = a("192.168.106.10") }), "outside the subnet 192.168.105.0/24"},
		{"end is broadcast", with(func(c *Config) { c.EndAddr = a("192.168.105.255") }), "broadcast"},
		{"end before start", Config{StartAddr: a("192.168.105.100"), EndAddr: a("192.168.105.50"), Mask: mask("255.255.255.0")}, "does not come after"},
		{"end equals start", with(func(c *Config) { c.EndAddr = a("192.168.105.1") }), "does not come after"},
		{"IPv6 end", with(func(c *Config) { c.EndAddr = a("fd00::2") }), "not IPv4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := darwinParams(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("darwinParams = %v, want an error containing %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "host interface vmnet-") {
				t.Errorf("error %q does not name the interface", err)
			}
		})
	}
}

func TestDarwinName(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "vmnet-shared"},
		{Config{Mode: ModeHost}, "vmnet-host"},
		{Config{Mode: ModeBridged}, "vmnet-bridged"},
		{Config{Name: "uplink"}, "uplink"},
	} {
		if got := darwinName(tc.cfg); got != tc.want {
			t.Errorf("darwinName(%+v) = %q, want %q", tc.cfg, got, tc.want)
		}
	}
}

func TestCheckLinux(t *testing.T) {
	if err := checkLinux(Config{Name: "h0", Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")}, Bridge: "br0", MTU: 9000}); err != nil {
		t.Errorf("Linux fields refused: %v", err)
	}
	for field, cfg := range map[string]Config{
		"Mode":        {Mode: ModeShared},
		"StartAddr":   {StartAddr: netip.MustParseAddr("192.168.105.1")},
		"EndAddr":     {EndAddr: netip.MustParseAddr("192.168.105.254")},
		"Mask":        {Mask: mask("255.255.255.0")},
		"InterfaceID": {InterfaceID: UUID{1}},
		"NetworkID":   {NetworkID: UUID{1}},
	} {
		err := checkLinux(cfg)
		if err == nil || !strings.Contains(err.Error(), field) || !strings.Contains(err.Error(), "tapswitch0") {
			t.Errorf("checkLinux with %s = %v, want an error naming it and the interface", field, err)
		}
	}
}

func TestLastAddr(t *testing.T) {
	for p, want := range map[string]string{
		"192.168.105.0/24": "192.168.105.255", "10.0.0.0/8": "10.255.255.255",
		"172.16.4.0/22": "172.16.7.255", "192.168.1.8/30": "192.168.1.11",
	} {
		if got := lastAddr(netip.MustParsePrefix(p)); got.String() != want {
			t.Errorf("lastAddr(%s) = %v, want %s", p, got, want)
		}
	}
}

func TestVMNetError(t *testing.T) {
	if err := vmnetError("vmnet-shared", "vmnet_start_interface", statusInvalidAccess); !errors.Is(err, fs.ErrPermission) ||
		!strings.Contains(err.Error(), "root") || !strings.Contains(err.Error(), "VMNET_INVALID_ACCESS") {
		t.Errorf("invalid access: %v", err)
	}
	if err := vmnetError("vmnet-shared", "vmnet_start_interface", statusNotAuthorized); !errors.Is(err, fs.ErrPermission) ||
		!strings.Contains(err.Error(), "VMNET_NOT_AUTHORIZED") {
		t.Errorf("not authorized: %v", err)
	}
	// Without root, vmnet_start_interface fails with VMNET_FAILURE as
	// often as with a permission status; as root it is a general failure.
	euid := geteuid
	t.Cleanup(func() { geteuid = euid })
	for _, c := range []struct {
		uid    int
		op     string
		denied bool
	}{{501, "vmnet_start_interface", true}, {0, "vmnet_start_interface", false}, {501, "vmnet_read", false}} {
		geteuid = func() int { return c.uid }
		err := vmnetError("vmnet-shared", c.op, statusFailure)
		if errors.Is(err, fs.ErrPermission) != c.denied || !strings.Contains(err.Error(), "VMNET_FAILURE") {
			t.Errorf("uid %d, %s, VMNET_FAILURE: %v (want a missing privilege: %v)", c.uid, c.op, err, c.denied)
		}
	}
	geteuid = func() int { return 0 }
	if err := vmnetError("x", "vmnet_write", statusBufferExhausted); !errors.Is(err, ErrBufferExhausted) {
		t.Errorf("buffer exhausted: %v", err)
	}
	for st := statusSuccess; st <= statusNotAuthorized; st++ {
		if strings.HasPrefix(statusText(st), "vmnet status") {
			t.Errorf("status %d has no name", st)
		}
	}
	if s := statusText(4242); s != "vmnet status 4242" {
		t.Errorf("unknown status text %q", s)
	}
	for _, st := range []uint32{statusSharingBusy, statusInvalidArgument, statusFailure} {
		if err := vmnetError("x", "op", st); !strings.Contains(err.Error(), statusText(st)) || errors.Is(err, fs.ErrPermission) {
			t.Errorf("status %d: %v", st, err)
		}
	}
}

// TestParseMAC: vmnet's MAC address may come without leading zeros.
func TestParseMAC(t *testing.T) {
	for in, want := range map[string]string{
		"a2:4:0:1:b:c":      "a2:04:00:01:0b:0c",
		"a2:04:00:01:0b:0c": "a2:04:00:01:0b:0c",
		"FE:ED:0:0:0:1":     "fe:ed:00:00:00:01",
	} {
		if got, err := parseMAC(in); err != nil || got.String() != want {
			t.Errorf("parseMAC(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "a2:4:0:1:b", "a2:4:0:1:b:c:d", "a2:4:0:1:b:100", "a2:4:0:1:b:", "a2-4-0-1-b-c", "a2:4:0:1:b:+c", "g:0:0:0:0:0"} {
		if got, err := parseMAC(in); err == nil {
			t.Errorf("parseMAC(%q) = %v, want an error", in, got)
		}
	}
}
