package dhcp

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	vswitch "github.com/tapswitch/tapswitch/switch"
)

// Defaults for the zero values of Config.
const (
	DefaultLeaseTime = time.Hour
	DefaultQueueLen  = 256
)

// minLeaseTime keeps T1 and T2 meaningful whole seconds.
const minLeaseTime = 10 * time.Second

// Protocol timings.
const (
	// DeclineHold is how long an address a client declined (RFC 2131
	// §4.3.3: someone else answers ARP for it) is kept out of the pool.
	// Declines are not stored in the lease file.
	DeclineHold = 10 * time.Minute
	// offerHold is how long an offered address is kept for the client
	// that was offered it; clients request within seconds.
	offerHold = time.Minute
	// lazyFlush bounds how long a change the lease file need not record
	// at once (an extended expiry, a new host name) stays unwritten while
	// frames keep arriving; Close writes it too.
	lazyFlush = time.Minute
	// writeRetry is how long after a failed lease file write the next
	// is tried, unless one is forced (SIGHUP, Close).
	writeRetry = time.Second
	// logEvery rate-limits each kind of warning (pool exhausted, lease
	// file write failed, reply queue full).
	logEvery = time.Minute
	// maxReplyLen is the largest DHCP message every client accepts: a
	// 576-byte IP datagram less the IP and UDP headers (RFC 2131 §2).
	maxReplyLen = 576 - ipv4HeaderLen - udpHeaderLen
)

// Config configures a Server. Only Gateway is required.
type Config struct {
	// Gateway is the segment's router address with the subnet's prefix
	// length, e.g. 198.18.0.1/24. It is sent as the router option (3) and
	// as the server identifier (54), and the prefix gives the subnet mask
	// option (1).
	Gateway netip.Prefix
	// Range is the dynamic pool. The zero value means the whole subnet;
	// either way the network and broadcast addresses, the gateway, the
	// Reserved addresses and the static leases' addresses are left out.
	Range Range
	// Reserved addresses are never handed out dynamically, e.g. the host
	// interface's address.
	Reserved []netip.Addr
	// Static leases: the MAC always gets its address, which must be in the
	// subnet and may be outside Range.
	Static []StaticLease
	// DNS servers (option 6), Domain name (option 15) and the domain
	// Search list (option 119); each is sent only if set.
	DNS    []netip.Addr
	Domain string
	Search []string
	// LeaseTime is the lease granted (default 1 h, at least 10 s), in whole
	// seconds. Renewal (T1) is at half of it and rebinding (T2) at 7/8, per
	// RFC 2131 §4.4.5.
	LeaseTime time.Duration
	// MTU, if not 0, is sent as the interface MTU option (26).
	MTU int
	// LeaseFile is where bindings are kept across restarts; "" keeps them
	// in memory only. See ReadLeaseFile for the format.
	LeaseFile string
	// AnswerGateway makes the responder answer ARP requests and ICMP echo
	// requests for the gateway address, so that guests can resolve and
	// ping their gateway on a segment where no host interface owns it.
	// The responder then also announces the gateway with one gratuitous
	// ARP when it starts. Leave it false when a host interface has the
	// gateway address: two answers to one ARP request are a conflict.
	AnswerGateway bool
	// MAC is the responder's Ethernet address. The zero value means a
	// locally administered address derived from the gateway address, the
	// same on every start (guests' ARP caches stay valid across restarts).
	MAC vswitch.MAC
	// QueueLen bounds the replies waiting for ReadFrames (default 256);
	// when it is full, further replies are dropped and counted.
	QueueLen int
	// Logger receives start-up, lease file and rate-limited warnings,
	// never one line per packet. Nil discards them.
	Logger logrus.FieldLogger
	// Now is the clock for leases and the lease file (default time.Now).
	// Tests inject a fake clock to expire leases without sleeping.
	Now func() time.Time
	// LeaseLock, if set, is LeaseFile's lock, taken beforehand with
	// LockLeaseFile; New takes it over instead of locking the file
	// itself, and closes it if New fails.
	LeaseLock *LeaseLock
}

// Range is an inclusive range of IPv4 addresses.
type Range struct {
	Start, End netip.Addr
}

// IsZero reports whether r is the zero Range.
func (r Range) IsZero() bool { return r == Range{} }

// String formats r as START-END.
func (r Range) String() string { return r.Start.String() + "-" + r.End.String() }

// ParseRange parses "START-END", e.g. "198.18.0.100-198.18.0.199", as the
// --dhcp-range flag takes it.
func ParseRange(s string) (Range, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return Range{}, fmt.Errorf("parse range %q: want START-END", s)
	}
	start, err := netip.ParseAddr(strings.TrimSpace(a))
	if err != nil || !start.Is4() {
		return Range{}, fmt.Errorf("parse range %q: bad IPv4 start address", s)
	}
	end, err := netip.ParseAddr(strings.TrimSpace(b))
	if err != nil || !end.Is4() {
		return Range{}, fmt.Errorf("parse range %q: bad IPv4 end address", s)
	}
	if end.Less(start) {
		return Range{}, fmt.Errorf("parse range %q: end before start", s)
	}
	return Range{Start: start, End: end}, nil
}

// StaticLease binds a MAC address to an IPv4 address for good.
type StaticLease struct {
	MAC vswitch.MAC
	IP  netip.Addr
}

// String formats l as MAC=IP.
func (l StaticLease) String() string { return l.MAC.String() + "=" + l.IP.String() }

// ParseStaticLease parses "MAC=IP", e.g. "52:54:00:12:34:56=198.18.0.10",
// as the --dhcp-static flag takes it.
func ParseStaticLease(s string) (StaticLease, error) {
	m, a, ok := strings.Cut(s, "=")
	if !ok {
		return StaticLease{}, fmt.Errorf("parse static lease %q: want MAC=IP", s)
	}
	mac, err := vswitch.ParseMAC(strings.TrimSpace(m))
	if err != nil {
		return StaticLease{}, fmt.Errorf("parse static lease %q: %w", s, err)
	}
	ip, err := netip.ParseAddr(strings.TrimSpace(a))
	if err != nil || !ip.Is4() {
		return StaticLease{}, fmt.Errorf("parse static lease %q: bad IPv4 address", s)
	}
	return StaticLease{MAC: mac, IP: ip}, nil
}

// errConfig marks configuration errors.
var errConfig = errors.New("invalid dhcp configuration")

// ConfigError is a setting of Config that New and Check refuse. It
// matches errors.Is(err, errConfig) and names the refused field, so that
// a caller can point at what set it (a flag, a line of a file).
type ConfigError struct {
	// Field is the name of the Config field refused: "Gateway",
	// "Range", "Reserved", "Static", "DNS", "Domain", "Search",
	// "LeaseTime", "MTU", "MAC", "LeaseLock", or "Options" when DNS, Domain and
	// Search together make a reply too long.
	Field string
	msg   string
}

func (e *ConfigError) Error() string { return errConfig.Error() + ": " + e.msg }

// Unwrap makes errors.Is(err, errConfig) true.
func (e *ConfigError) Unwrap() error { return errConfig }

// settings is a validated Config with its derived values.
type settings struct {
	Config
	gw             netip.Addr
	subnet         netip.Prefix
	network, bcast netip.Addr
	start, end     netip.Addr
	static         map[vswitch.MAC]netip.Addr
	excluded       []netip.Addr
	t1, t2         time.Duration
}

// Check reports what New would refuse in c's settings, without loading
// the lease file.
func (c Config) Check() error {
	s, err := c.validate()
	if err == nil {
		_, err = s.options()
	}
	if err != nil {
		return fmt.Errorf("dhcp server %v: %w", c.Gateway, err)
	}
	return nil
}

func (c Config) validate() (*settings, error) {
	bad := func(field, format string, args ...any) (*settings, error) {
		return nil, &ConfigError{Field: field, msg: fmt.Sprintf(format, args...)}
	}
	s := &settings{Config: c}
	if c.LeaseLock != nil && c.LeaseLock.path != c.LeaseFile {
		return bad("LeaseLock", "lease lock on %s for lease file %q", c.LeaseLock.path, c.LeaseFile)
	}
	if !c.Gateway.IsValid() || !c.Gateway.Addr().Is4() {
		return bad("Gateway", "gateway %v: want an IPv4 address with prefix length, e.g. 198.18.0.1/24", c.Gateway)
	}
	if b := c.Gateway.Bits(); b < 8 || b > 30 {
		return bad("Gateway", "gateway %v: prefix length must be 8..30", c.Gateway)
	}
	s.gw = c.Gateway.Addr()
	s.subnet = c.Gateway.Masked()
	s.network = s.subnet.Addr()
	s.bcast = addrFrom(u32(s.network) | (1<<(32-s.subnet.Bits()) - 1))
	if s.gw == s.network || s.gw == s.bcast {
		return bad("Gateway", "gateway %v is the subnet's network or broadcast address", c.Gateway)
	}
	inSubnet := func(a netip.Addr) bool { return a.Is4() && s.subnet.Contains(a) }

	if c.Range.IsZero() {
		s.start, s.end = s.network.Next(), s.bcast.Prev()
	} else {
		s.start, s.end = c.Range.Start, c.Range.End
		if !inSubnet(s.start) || !inSubnet(s.end) || s.end.Less(s.start) {
			return bad("Range", "range %v: must be inside %v, start <= end", c.Range, s.subnet)
		}
	}
	s.excluded = []netip.Addr{s.network, s.bcast, s.gw}
	reserved := map[netip.Addr]bool{}
	for _, a := range c.Reserved {
		if !a.Is4() {
			return bad("Reserved", "reserved address %v: want IPv4", a)
		}
		reserved[a] = true
		s.excluded = append(s.excluded, a)
	}
	s.static = make(map[vswitch.MAC]netip.Addr, len(c.Static))
	staticIPs := map[netip.Addr]vswitch.MAC{}
	for _, l := range c.Static {
		switch {
		case l.MAC.Multicast() || l.MAC == vswitch.MAC{}:
			return bad("Static", "static lease %v: MAC must be unicast", l)
		case !inSubnet(l.IP) || l.IP == s.network || l.IP == s.bcast:
			return bad("Static", "static lease %v: address must be a host address in %v", l, s.subnet)
		case l.IP == s.gw:
			return bad("Static", "static lease %v: address is the gateway", l)
		case reserved[l.IP]:
			return bad("Static", "static lease %v: address is reserved", l)
		}
		if _, dup := s.static[l.MAC]; dup {
			return bad("Static", "static lease %v: MAC listed twice", l)
		}
		if m, dup := staticIPs[l.IP]; dup {
			return bad("Static", "static lease %v: address already given to %v", l, m)
		}
		s.static[l.MAC] = l.IP
		staticIPs[l.IP] = l.MAC
	}
	for _, a := range c.DNS {
		if !a.Is4() {
			return bad("DNS", "DNS server %v: want IPv4", a)
		}
	}
	if c.Domain != "" && !validDomain(c.Domain) {
		return bad("Domain", "domain %q: not a valid domain name", c.Domain)
	}
	s.Domain = strings.TrimSuffix(c.Domain, ".")
	s.Search = nil
	for _, d := range c.Search {
		if !validDomain(d) {
			return bad("Search", "search domain %q: not a valid domain name", d)
		}
		// A final dot would encode as an empty label, ending the name early.
		s.Search = append(s.Search, strings.TrimSuffix(d, "."))
	}
	if c.LeaseTime < 0 {
		return bad("LeaseTime", "lease time %v: negative", c.LeaseTime)
	}
	if s.LeaseTime == 0 {
		s.LeaseTime = DefaultLeaseTime
	}
	if s.LeaseTime < minLeaseTime || s.LeaseTime.Seconds() >= math.MaxUint32 {
		return bad("LeaseTime", "lease time %v: want %v..136 years", c.LeaseTime, minLeaseTime)
	}
	s.LeaseTime = s.LeaseTime.Truncate(time.Second)
	s.t1 = (s.LeaseTime / 2).Truncate(time.Second)
	s.t2 = (s.LeaseTime * 7 / 8).Truncate(time.Second)
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		return bad("MTU", "MTU %d: want 68..65535 or 0", c.MTU)
	}
	if s.QueueLen <= 0 {
		s.QueueLen = DefaultQueueLen
	}
	if s.MAC == (vswitch.MAC{}) {
		s.MAC = defaultMAC(s.gw)
	} else if s.MAC.Multicast() {
		return bad("MAC", "MAC %v: must be unicast", s.MAC)
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	return s, nil
}

// defaultMAC derives the responder's MAC from the gateway address: the
// first bytes of a hash, made locally administered and unicast.
func defaultMAC(gw netip.Addr) vswitch.MAC {
	b := gw.As4()
	return vswitch.DerivedMAC(append([]byte("tapswitch dhcp "), b[:]...))
}

// validDomain reports whether s is a domain name that option 15 and
// option 119 can carry: dot-separated labels of 1..63 letters, digits, '-'
// or '_', at most 253 bytes, an optional final dot.
func validDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
