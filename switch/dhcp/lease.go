package dhcp

import (
	"net/netip"
	"sort"
	"time"

	vswitch "github.com/tapswitch/tapswitch/switch"
)

// LeaseState says where a lease table entry stands. The zero value is not
// a valid state.
type LeaseState uint8

// Lease states.
const (
	_ LeaseState = iota
	// LeaseOffered: the address was offered to the MAC, which has not
	// requested it yet. Offers live in memory only and hold the address
	// for offerHold.
	LeaseOffered
	// LeaseBound: the address was acknowledged to the MAC until Expiry.
	// Past Expiry the entry stays (an expired record): the MAC gets the
	// same address back, and no other MAC gets it while free addresses
	// remain.
	LeaseBound
	// LeaseReleased: the client released the address. Like an expired
	// binding it stays the MAC's while free addresses remain (RFC 2131
	// 4.3.1: a client gets its previous address back), and is reused,
	// oldest first, only when the pool has no other.
	LeaseReleased
	// LeaseStatic: a configured static lease not acknowledged since the
	// server started.
	LeaseStatic
)

var stateNames = [...]string{
	LeaseOffered:  "offered",
	LeaseBound:    "bound",
	LeaseReleased: "released",
	LeaseStatic:   "static",
}

// String returns the state's name, as written in the lease file.
func (s LeaseState) String() string {
	if s == 0 || int(s) >= len(stateNames) {
		return "invalid"
	}
	return stateNames[s]
}

func parseState(s string) (LeaseState, bool) {
	for i, n := range stateNames {
		if n != "" && n == s {
			return LeaseState(i), true
		}
	}
	return 0, false
}

// Lease is one entry of the lease table, as reported by Server.Leases.
type Lease struct {
	MAC vswitch.MAC `json:"mac"`
	IP  netip.Addr  `json:"ip"`
	// Expiry is when the binding ends (offers: when the offer lapses;
	// released leases: when the release happened). It is zero for a static
	// lease that has not been acknowledged since the server started.
	Expiry time.Time `json:"expiry,omitzero"`
	// Static is true for a configured MAC=IP lease.
	Static bool `json:"static,omitempty"`
	// Hostname is the client's host name option (12), sanitised; may be
	// empty.
	Hostname string     `json:"hostname,omitempty"`
	State    LeaseState `json:"state"`
}

// Active reports whether l holds its address for its MAC at now: an
// unexpired offer or binding.
func (l Lease) Active(now time.Time) bool {
	return (l.State == LeaseBound || l.State == LeaseOffered) && l.Expiry.After(now)
}

// record is a lease table entry.
type record struct {
	mac      vswitch.MAC
	ip       netip.Addr
	expiry   time.Time
	state    LeaseState // LeaseOffered, LeaseBound or LeaseReleased
	static   bool
	hostname string
	// restored: a binding read from the lease file at start, whose
	// expiry there may lag a renewal acknowledged before a crash.
	restored bool
	// prevState and prevExpiry are what an offer displaced: a release or
	// an expired binding of the same MAC and address (prevState is zero
	// for an offer of an address the MAC did not hold). The record goes
	// back to them when the offer lapses or is forgotten, and the lease
	// file keeps them meanwhile: an offer not taken up must not cost the
	// MAC its claim on the address.
	prevState  LeaseState
	prevExpiry time.Time
}

// inFile reports whether the lease file holds r: a dynamic binding or
// release, or one an outstanding offer displaced.
func (r *record) inFile() bool {
	return !r.static && (r.state != LeaseOffered || r.prevState != 0)
}

// fileLease is r as the lease file holds it (see inFile).
func (r *record) fileLease() Lease {
	l := r.lease()
	if r.state == LeaseOffered {
		l.State, l.Expiry = r.prevState, r.prevExpiry
	}
	return l
}

// table is the lease table: which MAC has which address. It does no I/O
// and reads no clock; callers pass now. It is not safe for concurrent use.
//
// Invariants: byMAC and byIP index the same records, one per MAC and one
// per address; a static MAC's record, if any, has its static address.
type table struct {
	subnet     netip.Prefix
	start, end uint32 // dynamic range, inclusive
	// excluded addresses are never handed out dynamically: the network
	// and broadcast addresses, the gateway, Config.Reserved.
	excluded map[uint32]struct{}
	static   map[vswitch.MAC]netip.Addr
	staticIP map[netip.Addr]vswitch.MAC
	byMAC    map[vswitch.MAC]*record
	byIP     map[netip.Addr]*record
	// declined maps an address a client declined to the time it may be
	// offered again.
	declined map[netip.Addr]time.Time
	// offers are the pending offers (state LeaseOffered, unexpired); an
	// address becomes free when its offer lapses.
	offers map[netip.Addr]*record
	// low is a hint: no address in [start, low) was free when last
	// looked at. Every path that frees an address lowers it.
	low      uint32
	poolSize int
	// dirty is set when a change the lease file must record happens: a
	// new MAC→IP binding, a release, a removed binding. lazy is set when
	// only expiry or host name changed.
	dirty, lazy bool
	// reuseAfter: until then, bindings restored from the lease file are
	// not reused even if expired there. Renewals are written lazily, so
	// after a crash the file's expiry may be up to one lease time short
	// of what a client was acknowledged.
	reuseAfter time.Time
	// scanned counts the entries offer and bind looked at (offers,
	// declines, addresses, bindings), all under the server's lock: the
	// work a packet costs, which tests check does not grow with the table.
	scanned int
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addrFrom(u uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
}

// newTable returns an empty table for the given, already validated,
// subnet, dynamic range, exclusions and static leases.
func newTable(subnet netip.Prefix, start, end netip.Addr, excluded []netip.Addr, static map[vswitch.MAC]netip.Addr) *table {
	t := &table{
		subnet:   subnet,
		start:    u32(start),
		end:      u32(end),
		excluded: make(map[uint32]struct{}),
		static:   static,
		staticIP: make(map[netip.Addr]vswitch.MAC, len(static)),
		byMAC:    make(map[vswitch.MAC]*record),
		byIP:     make(map[netip.Addr]*record),
		declined: make(map[netip.Addr]time.Time),
		offers:   make(map[netip.Addr]*record),
	}
	t.low = t.start
	for _, a := range excluded {
		t.excluded[u32(a)] = struct{}{}
	}
	for mac, ip := range static {
		t.staticIP[ip] = mac
	}
	t.poolSize = int(t.end - t.start + 1)
	out := map[uint32]bool{}
	for a := range t.excluded {
		out[a] = true
	}
	for ip := range t.staticIP {
		out[u32(ip)] = true
	}
	for a := range out {
		if a >= t.start && a <= t.end {
			t.poolSize--
		}
	}
	return t
}

// reservedAddr reports whether a is never handed out dynamically.
func (t *table) reservedAddr(a uint32) bool {
	if _, ok := t.excluded[a]; ok {
		return true
	}
	_, ok := t.staticIP[addrFrom(a)]
	return ok
}

// inPool reports whether ip belongs to the dynamic pool.
func (t *table) inPool(ip netip.Addr) bool {
	if !ip.Is4() {
		return false
	}
	a := u32(ip)
	return a >= t.start && a <= t.end && !t.reservedAddr(a)
}

// lower notes that ip may have become free.
func (t *table) lower(ip netip.Addr) {
	if a := u32(ip); a < t.low && a >= t.start {
		t.low = a
	}
}

// expire forgets lapsed declines and offers, freeing their addresses; a
// lapsed offer that displaced a release or an expired binding reverts to
// it instead.
func (t *table) expire(now time.Time) {
	for ip, until := range t.declined {
		t.scanned++
		if !until.After(now) {
			delete(t.declined, ip)
			t.lower(ip)
		}
	}
	for ip, r := range t.offers {
		t.scanned++
		if r.state == LeaseOffered && r.prevState != 0 && !r.expiry.After(now) {
			t.revert(r)
			continue
		}
		if !r.expiry.After(now) || r.state != LeaseOffered {
			delete(t.offers, ip)
			t.lower(ip)
		}
	}
}

// revert ends r's offer, giving it back the release or expired binding
// the offer displaced.
func (t *table) revert(r *record) {
	delete(t.offers, r.ip)
	r.state, r.expiry = r.prevState, r.prevExpiry
	r.prevState, r.prevExpiry = 0, time.Time{}
}

// free reports whether ip may be handed to a new MAC now. If a record
// holds ip but lets it go (a lapsed offer), it is returned so that the
// caller can evict it.
func (t *table) free(ip netip.Addr, now time.Time) (holder *record, ok bool) {
	if !t.inPool(ip) {
		return nil, false
	}
	if until, ok := t.declined[ip]; ok && until.After(now) {
		return nil, false
	}
	r := t.byIP[ip]
	switch {
	case r == nil:
		return nil, true
	case r.static:
		return nil, false
	case r.state == LeaseOffered && r.prevState == 0 && !r.expiry.After(now):
		return r, true
	}
	return nil, false
}

// remove deletes r from the table.
func (t *table) remove(r *record) {
	delete(t.byMAC, r.mac)
	if t.byIP[r.ip] == r {
		delete(t.byIP, r.ip)
	}
	if t.offers[r.ip] == r {
		delete(t.offers, r.ip)
	}
	if r.inFile() {
		t.dirty = true
	}
	t.lower(r.ip)
}

// insert adds a record for mac at ip, evicting whatever held either.
func (t *table) insert(mac vswitch.MAC, ip netip.Addr, state LeaseState, expiry time.Time) *record {
	if old := t.byMAC[mac]; old != nil {
		t.remove(old)
	}
	if old := t.byIP[ip]; old != nil {
		t.remove(old)
	}
	_, static := t.static[mac]
	r := &record{mac: mac, ip: ip, state: state, expiry: expiry, static: static}
	t.byMAC[mac] = r
	t.byIP[ip] = r
	if state == LeaseOffered {
		t.offers[ip] = r
	} else if !static {
		t.dirty = true
	}
	return r
}

// lowestFree returns the lowest free address in the pool.
func (t *table) lowestFree(now time.Time) (netip.Addr, bool) {
	scan := func(from, to uint32) (netip.Addr, bool) {
		for a := from; a <= to && a >= from; a++ { // a >= from: stop on wrap at 255.255.255.255
			t.scanned++
			if ip := addrFrom(a); !t.reservedAddr(a) {
				if _, ok := t.free(ip, now); ok {
					return ip, true
				}
			}
		}
		return netip.Addr{}, false
	}
	if ip, ok := scan(t.low, t.end); ok {
		t.low = u32(ip)
		return ip, true
	}
	// The hint should make this unnecessary; it keeps a missed lowering
	// from ever turning into a false "exhausted".
	if t.low > t.start {
		if ip, ok := scan(t.start, t.low-1); ok {
			t.low = u32(ip)
			return ip, true
		}
	}
	t.low = t.end
	return netip.Addr{}, false
}

// oldestExpired returns the dynamic binding that expired first, if any.
func (t *table) oldestExpired(now time.Time) *record {
	var old *record
	for _, r := range t.byMAC {
		t.scanned++
		if r.static || r.state != LeaseBound && r.state != LeaseReleased || r.expiry.After(now) || !t.inPool(r.ip) ||
			r.restored && now.Before(t.reuseAfter) {
			continue
		}
		if old == nil || r.expiry.Before(old.expiry) || r.expiry.Equal(old.expiry) && u32(r.ip) < u32(old.ip) {
			old = r
		}
	}
	return old
}

// offer picks the address to offer mac and holds it until now+hold:
// the static address; else the address mac already has (bound, expired,
// released or offered) unless it has since been taken; else requested if
// free; else the lowest free address; else the address of the binding
// that expired first. An unexpired binding stays as it is; a release or
// an expired binding becomes an offer that reverts to it if not taken up.
// ok is false when the pool is exhausted.
func (t *table) offer(mac vswitch.MAC, requested netip.Addr, now time.Time, hold time.Duration) (netip.Addr, bool) {
	t.expire(now)
	if ip, ok := t.static[mac]; ok {
		if r := t.byMAC[mac]; r == nil {
			t.insert(mac, ip, LeaseOffered, now.Add(hold))
		} else if r.state == LeaseOffered {
			r.expiry = now.Add(hold)
		}
		return ip, true
	}
	if r := t.byMAC[mac]; r != nil {
		if r.state == LeaseBound && r.expiry.After(now) {
			return r.ip, true
		}
		if r.state != LeaseOffered {
			// Held for mac during the offer, rather than handed to
			// another MAC of a full pool as the oldest expired.
			r.prevState, r.prevExpiry = r.state, r.expiry
			r.state = LeaseOffered
		}
		r.expiry = now.Add(hold)
		t.offers[r.ip] = r
		return r.ip, true
	}
	ip, ok := netip.Addr{}, false
	if requested.IsValid() {
		if _, free := t.free(requested, now); free {
			ip, ok = requested, true
		}
	}
	if !ok {
		ip, ok = t.lowestFree(now)
	}
	if !ok {
		old := t.oldestExpired(now)
		if old == nil {
			return netip.Addr{}, false
		}
		ip, ok = old.ip, true
	}
	t.insert(mac, ip, LeaseOffered, now.Add(hold))
	return ip, true
}

// bindResult says what bind did.
type bindResult uint8

const (
	// bindRefused: mac may not have the address (NAK).
	bindRefused bindResult = iota
	// bindNew: a new MAC→IP binding, which must be durable before the ACK.
	bindNew
	// bindExtended: the binding existed; only its expiry (or host name)
	// changed.
	bindExtended
)

// bind binds ip to mac until now+d, if mac may have ip: its static
// address, the address its record holds, or a free pool address.
func (t *table) bind(mac vswitch.MAC, ip netip.Addr, hostname string, now time.Time, d time.Duration) bindResult {
	t.expire(now)
	if sip, ok := t.static[mac]; ok && sip != ip {
		return bindRefused
	}
	r := t.byMAC[mac]
	if r == nil || r.ip != ip {
		if _, static := t.static[mac]; !static {
			if _, free := t.free(ip, now); !free {
				return bindRefused
			}
		} else if h := t.byIP[ip]; h != nil && h.mac != mac {
			t.remove(h) // a dynamic lease from before the static was configured
		}
		r = t.insert(mac, ip, LeaseBound, now.Add(d))
		r.hostname = hostname
		return bindNew
	}
	res := bindExtended
	if r.state != LeaseBound {
		if !r.static && r.prevState != LeaseBound {
			res = bindNew // offered or released: not on disk as bound
			t.dirty = true
		}
		delete(t.offers, r.ip)
		r.state = LeaseBound
		r.prevState, r.prevExpiry = 0, time.Time{}
	}
	if r.hostname != hostname && hostname != "" {
		r.hostname = hostname
		t.lazy = true
	}
	r.expiry = now.Add(d)
	if !r.static {
		t.lazy = true
	}
	return res
}

// forgetOffer drops mac's pending offer: the client chose another server.
func (t *table) forgetOffer(mac vswitch.MAC) {
	r := t.byMAC[mac]
	switch {
	case r == nil || r.state != LeaseOffered:
	case r.prevState != 0:
		t.revert(r)
	default:
		t.remove(r)
	}
}

// release marks mac's binding of ip released. It reports whether it did.
func (t *table) release(mac vswitch.MAC, ip netip.Addr, now time.Time) bool {
	r := t.byMAC[mac]
	if r == nil || r.ip != ip || r.state != LeaseBound {
		return false
	}
	r.expiry = now
	if r.static {
		return true
	}
	r.state = LeaseReleased
	t.dirty = true
	return true
}

// decline records that mac found ip in use by someone else: mac loses it
// and nobody is offered it until now+hold. A static address is never
// withdrawn from its MAC. It reports whether ip was mac's.
func (t *table) decline(mac vswitch.MAC, ip netip.Addr, now time.Time, hold time.Duration) (ok, static bool) {
	r := t.byMAC[mac]
	if r == nil || r.ip != ip {
		return false, false
	}
	if r.static {
		return true, true
	}
	t.remove(r)
	t.declined[ip] = now.Add(hold)
	return true, false
}

// load adds a record read from the lease file, unless it conflicts with
// the configuration (outside the pool, a static address, or a MAC that now
// has a static lease) or with a record already loaded. It reports whether
// it kept the record.
func (t *table) load(l Lease) bool {
	if l.State != LeaseBound && l.State != LeaseReleased {
		return false
	}
	if _, static := t.static[l.MAC]; static || !t.inPool(l.IP) {
		return false
	}
	if t.byMAC[l.MAC] != nil || t.byIP[l.IP] != nil {
		return false
	}
	r := &record{mac: l.MAC, ip: l.IP, expiry: l.Expiry, state: l.State, hostname: l.Hostname, restored: l.State == LeaseBound}
	t.byMAC[l.MAC] = r
	t.byIP[l.IP] = r
	return true
}

// persistent returns the records the lease file holds, ordered by
// address: dynamic bindings and releases.
func (t *table) persistent() []Lease {
	var ls []Lease
	for _, r := range t.byMAC {
		if r.inFile() {
			ls = append(ls, r.fileLease())
		}
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].IP.Less(ls[j].IP) })
	return ls
}

// snapshot returns every record and every static lease, ordered by address.
func (t *table) snapshot() []Lease {
	ls := make([]Lease, 0, len(t.byMAC)+len(t.static))
	for _, r := range t.byMAC {
		ls = append(ls, r.lease())
	}
	for mac, ip := range t.static {
		if t.byMAC[mac] == nil {
			ls = append(ls, Lease{MAC: mac, IP: ip, Static: true, State: LeaseStatic})
		}
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].IP.Less(ls[j].IP) })
	return ls
}

// inUse counts the unexpired bindings, static ones included.
func (t *table) inUse(now time.Time) int {
	n := 0
	for _, r := range t.byMAC {
		if r.state == LeaseBound && r.expiry.After(now) {
			n++
		}
	}
	return n
}

func (r *record) lease() Lease {
	return Lease{MAC: r.mac, IP: r.ip, Expiry: r.expiry, Static: r.static, Hostname: r.hostname, State: r.state}
}

// MarshalText implements encoding.TextMarshaler (JSON).
func (s LeaseState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
