package dhcp

import (
	"container/heap"
	"container/list"
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
	// LeaseDeclined: the MAC declined the address (someone else answers
	// ARP for it), which no one is offered until Expiry (DeclineHold).
	// Reported by Server.Leases only; never in the lease file.
	LeaseDeclined
)

var stateNames = [...]string{
	LeaseOffered:  "offered",
	LeaseBound:    "bound",
	LeaseReleased: "released",
	LeaseStatic:   "static",
	LeaseDeclined: "declined",
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
	// offerElem is r's place in table.offers while its offer is out.
	offerElem *list.Element
	// heapPos is r's position in its table.expiring heap plus one; zero
	// when r is in neither.
	heapPos int
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
// per address; a static MAC's record, if any, has its static address, and
// every other record has a pool address.
//
// What a packet costs (offer, bind) does not grow with the table: the
// structures below keep lapsing offers and declines, free addresses and
// expired bindings in the order they are needed.
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
	// offered again; declines holds the same in that order (every
	// decline is held for DeclineHold), for expire to pop.
	declined map[netip.Addr]time.Time
	declines []declineHold
	// offers are the records in state LeaseOffered whose offer expire has
	// not seen lapse, by expiry: every offer is held for offerHold, so
	// moving a record to the back when its offer is made or extended
	// keeps the order. An address becomes free when its offer lapses.
	offers list.List
	// low is where lowestFree's scan resumes: every address in
	// [start, low) was taken when the scan passed it. freed holds those
	// of them freed since (lower), lowest first, some taken again since.
	low      uint64
	freed    addrHeap
	inFreed  map[uint32]struct{} // the addresses in freed
	poolSize int
	// expiring holds the dynamic bindings and releases by expiry, for
	// oldestExpired: [0] those of this run, [1] those restored from the
	// lease file, which are not reused before reuseAfter.
	expiring [2]expiryHeap
	// dirty is set when a change the lease file must record happens: a
	// new MAC→IP binding, a release, a removed binding. lazy is set when
	// only expiry or host name changed.
	dirty, lazy bool
	// unsaved holds the MACs given a new binding (bindNew) since the
	// lease file was last written: their ACKs wait for a write, their
	// renewals too. The server clears it when a write succeeds; it is
	// empty unless dirty is set.
	unsaved map[vswitch.MAC]struct{}
	// reuseAfter: until then, bindings restored from the lease file are
	// not reused even if expired there. Renewals are written lazily, so
	// after a crash the file's expiry may be up to one lease time (the
	// longer of this run's and the file's) short of what a client was
	// acknowledged.
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
		unsaved:  make(map[vswitch.MAC]struct{}),
		inFreed:  make(map[uint32]struct{}),
	}
	t.low = uint64(t.start)
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

// lower notes that ip may have become free. Every path that frees an
// address calls it.
func (t *table) lower(ip netip.Addr) {
	a := u32(ip)
	if _, in := t.inFreed[a]; in || uint64(a) >= t.low || a < t.start {
		return
	}
	// Once: an address offered and forgotten over and over (DISCOVERs
	// answered by another server) would otherwise pile up copies.
	t.inFreed[a] = struct{}{}
	heap.Push(&t.freed, a)
}

// expire forgets lapsed declines and offers, freeing their addresses; a
// lapsed offer that displaced a release or an expired binding reverts to
// it instead.
func (t *table) expire(now time.Time) {
	for len(t.declines) > 0 && !t.declines[0].until.After(now) {
		t.scanned++
		d := t.declines[0]
		t.declines = t.declines[1:]
		if until, ok := t.declined[d.ip]; ok && until.Equal(d.until) {
			delete(t.declined, d.ip)
			t.lower(d.ip)
		}
	}
	for e := t.offers.Front(); e != nil && !e.Value.(*record).expiry.After(now); e = t.offers.Front() {
		t.scanned++
		r := e.Value.(*record)
		if r.prevState != 0 {
			t.revert(r)
			continue
		}
		t.dropOffer(r)
		t.lower(r.ip)
	}
}

// holdOffer holds r's offer (r.state is LeaseOffered) until expiry, which
// must be the latest of all offers (now+offerHold).
func (t *table) holdOffer(r *record, expiry time.Time) {
	r.expiry = expiry
	if r.offerElem == nil {
		r.offerElem = t.offers.PushBack(r)
	} else {
		t.offers.MoveToBack(r.offerElem)
	}
}

// dropOffer takes r off the pending offers: bound, removed or reverted.
func (t *table) dropOffer(r *record) {
	if r.offerElem != nil {
		t.offers.Remove(r.offerElem)
		r.offerElem = nil
	}
}

// revert ends r's offer, giving it back the release or expired binding
// the offer displaced.
func (t *table) revert(r *record) {
	t.dropOffer(r)
	r.state, r.expiry = r.prevState, r.prevExpiry
	r.prevState, r.prevExpiry = 0, time.Time{}
	t.track(r)
}

// track files r in t.expiring, or takes it out, after its state or expiry
// changed or it left the table.
func (t *table) track(r *record) {
	h := &t.expiring[0]
	if r.restored {
		h = &t.expiring[1]
	}
	in := !r.static && (r.state == LeaseBound || r.state == LeaseReleased) && t.byMAC[r.mac] == r
	switch {
	case in && r.heapPos == 0:
		heap.Push(h, r)
	case in:
		heap.Fix(h, r.heapPos-1)
	case r.heapPos != 0:
		heap.Remove(h, r.heapPos-1)
	}
}

// free reports whether ip may be handed to a new MAC now: no record holds
// it, or only a lapsed offer (which insert then evicts).
func (t *table) free(ip netip.Addr, now time.Time) bool {
	if !t.inPool(ip) {
		return false
	}
	if until, ok := t.declined[ip]; ok && until.After(now) {
		return false
	}
	r := t.byIP[ip]
	switch {
	case r == nil:
		return true
	case r.static:
		return false
	case r.state == LeaseOffered && r.prevState == 0 && !r.expiry.After(now):
		return true
	}
	return false
}

// remove deletes r from the table.
func (t *table) remove(r *record) {
	delete(t.byMAC, r.mac)
	if t.byIP[r.ip] == r {
		delete(t.byIP, r.ip)
	}
	t.dropOffer(r)
	t.track(r)
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
	r := &record{mac: mac, ip: ip, state: state, static: static}
	t.byMAC[mac] = r
	t.byIP[ip] = r
	if state == LeaseOffered {
		t.holdOffer(r, expiry)
	} else {
		r.expiry = expiry
		t.track(r)
		if !static {
			t.dirty = true
		}
	}
	return r
}

// lowestFree returns the lowest free address in the pool. Each address
// is passed by the scan once, and looked at again only when freed: a full
// pool costs nothing to find full.
func (t *table) lowestFree(now time.Time) (netip.Addr, bool) {
	for len(t.freed) > 0 {
		t.scanned++
		if ip := addrFrom(t.freed[0]); t.free(ip, now) {
			return ip, true // left in freed: popped once taken
		}
		delete(t.inFreed, heap.Pop(&t.freed).(uint32))
	}
	for ; t.low <= uint64(t.end); t.low++ {
		t.scanned++
		if a := uint32(t.low); !t.reservedAddr(a) && t.free(addrFrom(a), now) {
			return addrFrom(a), true
		}
	}
	return netip.Addr{}, false
}

// oldestExpired returns the dynamic binding or release that expired
// first, if any.
func (t *table) oldestExpired(now time.Time) *record {
	var old *record
	for i, h := range t.expiring {
		t.scanned++
		if i == 1 && now.Before(t.reuseAfter) {
			continue
		}
		if len(h) > 0 && !h[0].expiry.After(now) && (old == nil || h[0].expiresBefore(old)) {
			old = h[0]
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
			t.holdOffer(r, now.Add(hold))
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
			t.track(r)
		}
		t.holdOffer(r, now.Add(hold))
		return r.ip, true
	}
	ip, ok := netip.Addr{}, false
	if requested.IsValid() {
		if t.free(requested, now) {
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
		ip = old.ip
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
// address, the address its record holds, or a free pool address. A new
// dynamic binding puts mac in t.unsaved.
func (t *table) bind(mac vswitch.MAC, ip netip.Addr, hostname string, now time.Time, d time.Duration) bindResult {
	t.expire(now)
	if sip, ok := t.static[mac]; ok && sip != ip {
		return bindRefused
	}
	r := t.byMAC[mac]
	if r == nil || r.ip != ip {
		if _, static := t.static[mac]; !static {
			if !t.free(ip, now) {
				return bindRefused
			}
		} else if h := t.byIP[ip]; h != nil && h.mac != mac {
			t.remove(h) // a dynamic lease from before the static was configured
		}
		r = t.insert(mac, ip, LeaseBound, now.Add(d))
		r.hostname = hostname
		if !r.static {
			t.unsaved[mac] = struct{}{}
		}
		return bindNew
	}
	res := bindExtended
	if r.state != LeaseBound {
		if !r.static && r.prevState != LeaseBound {
			res = bindNew // offered or released: not on disk as bound
			t.dirty = true
			t.unsaved[mac] = struct{}{}
		}
		t.dropOffer(r)
		r.state = LeaseBound
		r.prevState, r.prevExpiry = 0, time.Time{}
	}
	if r.hostname != hostname && hostname != "" {
		r.hostname = hostname
		t.lazy = true
	}
	r.expiry = now.Add(d)
	t.track(r)
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
	t.track(r)
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
	t.declines = append(t.declines, declineHold{ip, mac, now.Add(hold)})
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
	t.track(r)
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

// snapshot returns every record, every static lease and every address held
// after a decline, ordered by address.
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
	for _, d := range t.declines {
		if until, ok := t.declined[d.ip]; ok && until.Equal(d.until) {
			ls = append(ls, Lease{MAC: d.mac, IP: d.ip, Expiry: d.until, State: LeaseDeclined})
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

// expiresBefore orders bindings for oldestExpired: by expiry, then by
// address.
func (r *record) expiresBefore(o *record) bool {
	return r.expiry.Before(o.expiry) || r.expiry.Equal(o.expiry) && u32(r.ip) < u32(o.ip)
}

// declineHold is a declined address, the MAC that declined it, and when
// it may be offered again.
type declineHold struct {
	ip    netip.Addr
	mac   vswitch.MAC
	until time.Time
}

// expiryHeap is a container/heap of records by expiresBefore, each
// knowing its position (heapPos).
type expiryHeap []*record

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expiresBefore(h[j]) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapPos, h[j].heapPos = i+1, j+1
}

func (h *expiryHeap) Push(x any) {
	r := x.(*record)
	*h = append(*h, r)
	r.heapPos = len(*h)
}

func (h *expiryHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	r.heapPos = 0
	return r
}

// addrHeap is a container/heap of addresses, lowest first.
type addrHeap []uint32

func (h addrHeap) Len() int           { return len(h) }
func (h addrHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h addrHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *addrHeap) Push(x any)        { *h = append(*h, x.(uint32)) }

func (h *addrHeap) Pop() any {
	old := *h
	a := old[len(old)-1]
	*h = old[:len(old)-1]
	return a
}

// MarshalText implements encoding.TextMarshaler (JSON).
func (s LeaseState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
