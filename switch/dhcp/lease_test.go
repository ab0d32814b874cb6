package dhcp

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// testTable returns a table for cfg (Gateway defaulted), validated as New
// would.
func testTable(t *testing.T, cfg Config) *table {
	t.Helper()
	if !cfg.Gateway.IsValid() {
		cfg.Gateway = testGateway
	}
	s, err := cfg.validate()
	if err != nil {
		t.Fatal(err)
	}
	return newTable(s.subnet, s.start, s.end, s.excluded, s.static)
}

func mustOffer(t *testing.T, tb *table, m vswitch.MAC, now time.Time) netip.Addr {
	t.Helper()
	ip, ok := tb.offer(m, netip.Addr{}, now, offerHold)
	if !ok {
		t.Fatalf("offer to %v: pool exhausted", m)
	}
	return ip
}

func mustBind(t *testing.T, tb *table, m vswitch.MAC, now time.Time) netip.Addr {
	t.Helper()
	ip := mustOffer(t, tb, m, now)
	if r := tb.bind(m, ip, "", now, time.Hour); r == bindRefused {
		t.Fatalf("bind %v to %v refused", ip, m)
	}
	return ip
}

func TestTableAllocationOrder(t *testing.T) {
	tb := testTable(t, Config{
		Range:    Range{ip4("198.18.0.1"), ip4("198.18.0.8")},
		Reserved: []netip.Addr{ip4("198.18.0.3")},
		Static:   []StaticLease{{MAC: porttest.MAC(99), IP: ip4("198.18.0.5")}},
	})
	// .1 is the gateway, .3 reserved, .5 static.
	if tb.poolSize != 5 {
		t.Errorf("pool size %d, want 5", tb.poolSize)
	}
	now := newClock().Now()
	want := []string{"198.18.0.2", "198.18.0.4", "198.18.0.6", "198.18.0.7", "198.18.0.8"}
	for i, w := range want {
		if got := mustOffer(t, tb, porttest.MAC(i+1), now); got != ip4(w) {
			t.Errorf("offer %d: got %v, want %v", i, got, w)
		}
	}
	if _, ok := tb.offer(porttest.MAC(50), netip.Addr{}, now, offerHold); ok {
		t.Error("offer beyond the pool succeeded")
	}
	// The static MAC still gets its address.
	if got := mustOffer(t, tb, porttest.MAC(99), now); got != ip4("198.18.0.5") {
		t.Errorf("static offer: got %v", got)
	}
}

func TestTableDefaultRange(t *testing.T) {
	tb := testTable(t, Config{Reserved: []netip.Addr{ip4("198.18.0.2")}})
	// 254 host addresses less the gateway and one reserved.
	if tb.poolSize != 252 {
		t.Errorf("pool size %d, want 252", tb.poolSize)
	}
	if got := mustOffer(t, tb, porttest.MAC(1), newClock().Now()); got != ip4("198.18.0.3") {
		t.Errorf("first offer %v, want 198.18.0.3", got)
	}
}

func TestTableStablePerMAC(t *testing.T) {
	clock := newClock()
	tb := testTable(t, Config{Range: Range{ip4("198.18.0.10"), ip4("198.18.0.20")}})
	a, b := porttest.MAC(1), porttest.MAC(2)
	ipA := mustBind(t, tb, a, clock.Now())
	ipB := mustBind(t, tb, b, clock.Now())
	if ipA == ipB {
		t.Fatal("two MACs got one address")
	}
	// Renewal and re-DISCOVER give the same address.
	if got := mustOffer(t, tb, a, clock.Now()); got != ipA {
		t.Errorf("re-offer: got %v, want %v", got, ipA)
	}
	// Long after expiry the record still holds the address for a...
	clock.Add(48 * time.Hour)
	for i := 3; i < 8; i++ {
		if got := mustOffer(t, tb, porttest.MAC(i), clock.Now()); got == ipA || got == ipB {
			t.Errorf("expired address %v handed to a new MAC while free ones remain", got)
		}
	}
	// ...and a gets it back.
	if got := mustOffer(t, tb, a, clock.Now()); got != ipA {
		t.Errorf("after expiry: got %v, want %v", got, ipA)
	}
	if r := tb.bind(a, ipA, "", clock.Now(), time.Hour); r != bindExtended {
		t.Errorf("rebinding an expired record: %v, want bindExtended", r)
	}
}

func TestTableOfferHold(t *testing.T) {
	clock := newClock()
	tb := testTable(t, Config{Range: Range{ip4("198.18.0.10"), ip4("198.18.0.10")}})
	a, b := porttest.MAC(1), porttest.MAC(2)
	ip := mustOffer(t, tb, a, clock.Now())
	if _, ok := tb.offer(b, netip.Addr{}, clock.Now(), offerHold); ok {
		t.Fatal("offered address handed to another MAC within the hold")
	}
	clock.Add(offerHold)
	if got := mustOffer(t, tb, b, clock.Now()); got != ip {
		t.Errorf("after the offer lapsed: got %v, want %v", got, ip)
	}
	// a's REQUEST for it now fails: b holds it.
	if r := tb.bind(a, ip, "", clock.Now(), time.Hour); r != bindRefused {
		t.Errorf("bind of an address offered to another: %v", r)
	}
}

func TestTableStatic(t *testing.T) {
	clock := newClock()
	st := porttest.MAC(7)
	tb := testTable(t, Config{
		Range:  Range{ip4("198.18.0.10"), ip4("198.18.0.12")},
		Static: []StaticLease{{MAC: st, IP: ip4("198.18.0.11")}, {MAC: porttest.MAC(8), IP: ip4("198.18.0.200")}},
	})
	if tb.poolSize != 2 {
		t.Errorf("pool size %d, want 2", tb.poolSize)
	}
	for i := 1; i <= 2; i++ {
		if got := mustBind(t, tb, porttest.MAC(i), clock.Now()); got == ip4("198.18.0.11") {
			t.Error("static address handed out dynamically")
		}
	}
	if got := mustBind(t, tb, st, clock.Now()); got != ip4("198.18.0.11") {
		t.Errorf("static MAC got %v", got)
	}
	// Outside the range is fine for a static lease.
	if got := mustBind(t, tb, porttest.MAC(8), clock.Now()); got != ip4("198.18.0.200") {
		t.Errorf("static MAC outside the range got %v", got)
	}
	// A static MAC may not bind another address; nobody may bind a static one.
	if r := tb.bind(st, ip4("198.18.0.10"), "", clock.Now(), time.Hour); r != bindRefused {
		t.Errorf("static MAC bound another address: %v", r)
	}
	if r := tb.bind(porttest.MAC(9), ip4("198.18.0.200"), "", clock.Now(), time.Hour); r != bindRefused {
		t.Errorf("another MAC bound a static address: %v", r)
	}
	// Static bindings are not lease file material.
	for _, l := range tb.persistent() {
		if l.Static {
			t.Errorf("static lease %v in the persistent set", l)
		}
	}
}

func TestTableDecline(t *testing.T) {
	clock := newClock()
	tb := testTable(t, Config{Range: Range{ip4("198.18.0.10"), ip4("198.18.0.11")}})
	a := porttest.MAC(1)
	ip := mustBind(t, tb, a, clock.Now())
	if ok, static := tb.decline(porttest.MAC(2), ip, clock.Now(), DeclineHold); ok || static {
		t.Error("decline by a MAC that does not hold the address accepted")
	}
	if ok, _ := tb.decline(a, ip, clock.Now(), DeclineHold); !ok {
		t.Fatal("decline refused")
	}
	if !tb.dirty {
		t.Error("decline did not mark the table dirty")
	}
	// The hold is listed (ctl leases), not written to the lease file.
	declined := func() []Lease {
		var ds []Lease
		for _, l := range tb.snapshot() {
			if l.State == LeaseDeclined {
				ds = append(ds, l)
			}
		}
		return ds
	}
	if ds := declined(); len(ds) != 1 || ds[0].IP != ip || ds[0].MAC != a || !ds[0].Expiry.Equal(clock.Now().Add(DeclineHold)) {
		t.Errorf("declined entries %+v, want %v by %v until the hold ends", ds, ip, a)
	}
	if ls := tb.persistent(); slices.ContainsFunc(ls, func(l Lease) bool { return l.IP == ip }) {
		t.Errorf("the declined address is in the lease file's records: %+v", ls)
	}
	// Nobody, a included, gets the declined address during the hold.
	if got := mustOffer(t, tb, a, clock.Now()); got == ip {
		t.Error("declined address offered again at once")
	}
	if _, ok := tb.offer(porttest.MAC(3), netip.Addr{}, clock.Now(), offerHold); ok {
		t.Error("declined address offered to a new MAC")
	}
	if r := tb.bind(porttest.MAC(3), ip, "", clock.Now(), time.Hour); r != bindRefused {
		t.Error("declined address bound")
	}
	clock.Add(DeclineHold)
	tb.expire(clock.Now())
	if ds := declined(); len(ds) != 0 {
		t.Errorf("declined entries after the hold: %+v", ds)
	}
	if got := mustOffer(t, tb, porttest.MAC(3), clock.Now()); got != ip {
		t.Errorf("after the hold: got %v, want %v", got, ip)
	}
}

func TestTableExhaustion(t *testing.T) {
	clock := newClock()
	tb := testTable(t, Config{Range: Range{ip4("198.18.0.10"), ip4("198.18.0.12")}})
	var ips []netip.Addr
	for i := 1; i <= 3; i++ {
		ips = append(ips, mustBind(t, tb, porttest.MAC(i), clock.Now()))
		clock.Add(time.Minute) // MAC 1's lease expires first
	}
	if _, ok := tb.offer(porttest.MAC(4), netip.Addr{}, clock.Now(), offerHold); ok {
		t.Fatal("offer from an exhausted pool")
	}
	clock.Add(58*time.Minute + 30*time.Second) // t=61m30s: MAC 1 and 2 expired, MAC 3 not
	if got := mustOffer(t, tb, porttest.MAC(4), clock.Now()); got != ips[0] {
		t.Errorf("exhausted pool: got %v, want the oldest expired %v", got, ips[0])
	}
	if tb.byMAC[porttest.MAC(1)] != nil {
		t.Error("the evicted record is still there")
	}
	// MAC 1 comes back: only MAC 2's expired address is left.
	if got := mustOffer(t, tb, porttest.MAC(1), clock.Now()); got != ips[1] {
		t.Errorf("got %v, want %v", got, ips[1])
	}
	if n := tb.inUse(clock.Now()); n != 1 {
		t.Errorf("in use %d, want 1", n)
	}
}

func TestTableRelease(t *testing.T) {
	clock := newClock()
	tb := testTable(t, Config{Range: Range{ip4("198.18.0.10"), ip4("198.18.0.20")}})
	a, b, c := porttest.MAC(1), porttest.MAC(2), porttest.MAC(3)
	ipA := mustBind(t, tb, a, clock.Now())
	mustBind(t, tb, b, clock.Now())
	if tb.release(a, ip4("198.18.0.19"), clock.Now()) {
		t.Error("release of an address a does not hold")
	}
	tb.dirty = false
	if !tb.release(a, ipA, clock.Now()) {
		t.Fatal("release refused")
	}
	if !tb.dirty {
		t.Error("release not marked durable")
	}
	// Released: a gets it back if nobody took it...
	if got := mustOffer(t, tb, a, clock.Now()); got != ipA {
		t.Errorf("re-offer after release: got %v, want %v", got, ipA)
	}
	// ...and an offer a did not take up (it chose another server) leaves
	// the release as it was: the next new MAC gets another address.
	tb.forgetOffer(a)
	if r := tb.byMAC[a]; r == nil || r.state != LeaseReleased || r.ip != ipA {
		t.Errorf("after the forgotten offer a's record is %+v, want released %v", r, ipA)
	}
	if got := mustBind(t, tb, c, clock.Now()); got == ipA {
		t.Errorf("released address %v went to a new MAC while free ones remain", got)
	}
}

// TestTableOfferKeepsRelease: a DISCOVER without a REQUEST (an offer that
// lapses) must not cost a released lease or an expired binding its
// protection, in the table or in the lease file.
func TestTableOfferKeepsRelease(t *testing.T) {
	clock := newClock()
	tb := testTable(t, Config{Range: Range{ip4("198.18.0.10"), ip4("198.18.0.20")}})
	a, b := porttest.MAC(1), porttest.MAC(2)
	ipA := mustBind(t, tb, a, clock.Now())
	ipB := mustBind(t, tb, b, clock.Now())
	released := clock.Now()
	tb.release(a, ipA, released)
	clock.Add(2 * time.Hour) // b's binding has expired
	for _, m := range []vswitch.MAC{a, b} {
		mustOffer(t, tb, m, clock.Now())
	}
	want := []Lease{
		{MAC: a, IP: ipA, Expiry: released, State: LeaseReleased},
		{MAC: b, IP: ipB, Expiry: released.Add(time.Hour), State: LeaseBound},
	}
	if got := tb.persistent(); !reflect.DeepEqual(got, want) {
		t.Errorf("lease file during the offers:\n got %+v\nwant %+v", got, want)
	}
	clock.Add(offerHold)
	for i := 3; i < 8; i++ {
		if got := mustOffer(t, tb, porttest.MAC(i), clock.Now()); got == ipA || got == ipB {
			t.Errorf("after the offer lapsed %v went to a new MAC while free ones remain", got)
		}
	}
	if got := tb.persistent(); !reflect.DeepEqual(got, want) {
		t.Errorf("lease file after the offers lapsed:\n got %+v\nwant %+v", got, want)
	}
	// b takes up a new offer: its binding is on disk already.
	mustOffer(t, tb, b, clock.Now())
	if r := tb.bind(b, ipB, "", clock.Now(), time.Hour); r != bindExtended {
		t.Errorf("binding the offered expired binding: %v, want bindExtended", r)
	}
}

// TestTableOfferHoldsExpired: an expired binding offered to its own MAC is
// held for it during the offer, rather than handed to another MAC of the
// full pool as the oldest expired, and goes back to being the oldest
// expired when the offer lapses.
func TestTableOfferHoldsExpired(t *testing.T) {
	clock := newClock()
	tb := testTable(t, Config{Range: Range{ip4("198.18.0.10"), ip4("198.18.0.10")}})
	a, b := porttest.MAC(1), porttest.MAC(2)
	ip := mustBind(t, tb, a, clock.Now())
	clock.Add(2 * time.Hour)
	mustOffer(t, tb, a, clock.Now())
	if got, ok := tb.offer(b, netip.Addr{}, clock.Now(), offerHold); ok {
		t.Fatalf("%v offered to %v while offered to its expired holder", got, b)
	}
	if r := tb.bind(a, ip, "", clock.Now(), time.Hour); r != bindExtended {
		t.Errorf("a takes up the offer: %v, want bindExtended", r)
	}
	clock.Add(2 * time.Hour)
	mustOffer(t, tb, a, clock.Now())
	clock.Add(offerHold)
	if got := mustOffer(t, tb, b, clock.Now()); got != ip {
		t.Errorf("after a's offer lapsed: %v, want the expired %v", got, ip)
	}
}

func TestTableRequestedAddress(t *testing.T) {
	clock := newClock()
	tb := testTable(t, Config{Range: Range{ip4("198.18.0.10"), ip4("198.18.0.20")}})
	if got, _ := tb.offer(porttest.MAC(1), ip4("198.18.0.15"), clock.Now(), offerHold); got != ip4("198.18.0.15") {
		t.Errorf("free requested address not honoured: %v", got)
	}
	// Taken, out of range, the gateway: the pool's lowest instead.
	for _, req := range []string{"198.18.0.15", "198.18.0.30", "198.18.0.1", "10.0.0.1"} {
		if got, _ := tb.offer(porttest.MAC(2), ip4(req), clock.Now(), offerHold); got != ip4("198.18.0.10") {
			t.Errorf("requested %s: got %v, want 198.18.0.10", req, got)
		}
		tb.forgetOffer(porttest.MAC(2))
	}
	// INIT-REBOOT style bind of a free pool address with no record.
	if r := tb.bind(porttest.MAC(3), ip4("198.18.0.17"), "", clock.Now(), time.Hour); r != bindNew {
		t.Errorf("bind of a free address: %v", r)
	}
	if r := tb.bind(porttest.MAC(4), ip4("198.18.0.17"), "", clock.Now(), time.Hour); r != bindRefused {
		t.Errorf("bind of a taken address: %v", r)
	}
	if r := tb.bind(porttest.MAC(4), ip4("198.18.0.5"), "", clock.Now(), time.Hour); r != bindRefused {
		t.Errorf("bind outside the range: %v", r)
	}
}

func TestTableDurability(t *testing.T) {
	clock := newClock()
	tb := testTable(t, Config{})
	a := porttest.MAC(1)
	ip := mustOffer(t, tb, a, clock.Now())
	if tb.dirty {
		t.Error("an offer marked the table dirty")
	}
	if r := tb.bind(a, ip, "vm1", clock.Now(), time.Hour); r != bindNew || !tb.dirty {
		t.Errorf("first bind: %v dirty=%v, want bindNew and dirty", r, tb.dirty)
	}
	tb.dirty, tb.lazy = false, false
	clock.Add(30 * time.Minute)
	if r := tb.bind(a, ip, "vm1", clock.Now(), time.Hour); r != bindExtended || tb.dirty || !tb.lazy {
		t.Errorf("renewal: %v dirty=%v lazy=%v, want bindExtended, lazy only", r, tb.dirty, tb.lazy)
	}
	ls := tb.persistent()
	if len(ls) != 1 || ls[0].MAC != a || ls[0].IP != ip || ls[0].Hostname != "vm1" || !ls[0].Expiry.Equal(clock.Now().Add(time.Hour)) {
		t.Errorf("persistent: %+v", ls)
	}
}

// TestTablePerPacketWork checks that what a DISCOVER costs does not grow
// with the table: outstanding offers, a full pool, a full pool of expired
// bindings. It counts the entries looked at (table.scanned), not time.
func TestTablePerPacketWork(t *testing.T) {
	const perPacket = 8 // entries a DISCOVER may look at, on average
	clock := newClock()
	next := 0
	discover := func(tb *table) (netip.Addr, bool) {
		next++
		return tb.offer(porttest.MAC(next), netip.Addr{}, clock.Now(), offerHold)
	}
	// work runs n DISCOVERs from new MACs and returns what they looked at
	// and how many got an offer.
	work := func(tb *table, n int) (scanned, offered int) {
		before := tb.scanned
		for range n {
			if _, ok := discover(tb); ok {
				offered++
			}
		}
		return tb.scanned - before, offered
	}

	// Outstanding offers: 20000 in a /16.
	tb := testTable(t, Config{Gateway: netip.MustParsePrefix("198.18.0.1/16")})
	work(tb, 20000)
	if got, _ := work(tb, 100); got > 100*perPacket {
		t.Errorf("20000 offers outstanding: 100 DISCOVERs looked at %d entries, want <= %d", got, 100*perPacket)
	}
	// Once they lapse, each is looked at once more.
	clock.Add(offerHold)
	if got, _ := work(tb, 100); got > 20100+100*perPacket {
		t.Errorf("20100 lapsed offers: 100 DISCOVERs looked at %d entries, want <= %d", got, 20100+100*perPacket)
	}

	// A full pool of 2000 unexpired bindings.
	tb = testTable(t, Config{Gateway: netip.MustParsePrefix("198.18.0.1/16"), Range: Range{ip4("198.18.1.0"), ip4("198.18.8.207")}})
	for range tb.poolSize {
		ip, ok := discover(tb)
		if !ok || tb.bind(porttest.MAC(next), ip, "", clock.Now(), time.Hour) != bindNew {
			t.Fatalf("filling the pool: %v %v", ip, ok)
		}
	}
	if got, offered := work(tb, 100); offered != 0 || got > tb.poolSize+100*perPacket {
		t.Errorf("full pool: 100 DISCOVERs looked at %d entries (%d offers), want <= %d (0 offers)", got, offered, tb.poolSize+100*perPacket)
	}
	// The same bindings expired: every DISCOVER takes the oldest.
	clock.Add(2 * time.Hour)
	if got, offered := work(tb, 100); offered != 100 || got > 100*perPacket {
		t.Errorf("full pool of expired bindings: 100 DISCOVERs looked at %d entries (%d offers), want <= %d (100 offers)", got, offered, 100*perPacket)
	}
}

// TestTableIndexesMatchScan runs random operations on a small pool and
// checks after each that lowestFree and oldestExpired, which keep indexes,
// answer what a scan of the whole table does.
func TestTableIndexesMatchScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	clock := newClock()
	tb := testTable(t, Config{Range: Range{ip4("198.18.0.10"), ip4("198.18.0.25")},
		Static: []StaticLease{{MAC: porttest.MAC(99), IP: ip4("198.18.0.12")}}})
	tb.reuseAfter = clock.Now().Add(time.Hour)
	// Two restored bindings, as the lease file would give them.
	tb.load(Lease{MAC: porttest.MAC(50), IP: ip4("198.18.0.20"), Expiry: clock.Now().Add(-time.Hour), State: LeaseBound})
	tb.load(Lease{MAC: porttest.MAC(51), IP: ip4("198.18.0.21"), Expiry: clock.Now().Add(10 * time.Minute), State: LeaseBound})
	macs := []vswitch.MAC{porttest.MAC(99), porttest.MAC(50), porttest.MAC(51)}
	for i := 1; i <= 30; i++ {
		macs = append(macs, porttest.MAC(i))
	}
	for step := range 20000 {
		now := clock.Now()
		m := macs[rng.IntN(len(macs))]
		switch rng.IntN(8) {
		case 0, 1:
			var req netip.Addr
			if rng.IntN(3) == 0 {
				req = addrFrom(u32(ip4("198.18.0.8")) + uint32(rng.IntN(20)))
			}
			tb.offer(m, req, now, offerHold)
		case 2, 3:
			if r := tb.byMAC[m]; r != nil {
				tb.bind(m, r.ip, "", now, time.Duration(1+rng.IntN(90))*time.Minute)
			} else {
				tb.bind(m, addrFrom(u32(ip4("198.18.0.10"))+uint32(rng.IntN(16))), "", now, time.Hour)
			}
		case 4:
			if r := tb.byMAC[m]; r != nil {
				tb.release(m, r.ip, now)
			}
		case 5:
			if r := tb.byMAC[m]; r != nil && rng.IntN(4) == 0 {
				tb.decline(m, r.ip, now, DeclineHold)
			}
		case 6:
			tb.forgetOffer(m)
		case 7:
			clock.Add(time.Duration(rng.IntN(300)) * time.Second)
		}

		now = clock.Now()
		tb.expire(now)
		var wantFree netip.Addr
		for a := tb.start; a <= tb.end; a++ {
			if tb.free(addrFrom(a), now) {
				wantFree = addrFrom(a)
				break
			}
		}
		if got, _ := tb.lowestFree(now); got != wantFree {
			t.Fatalf("step %d: lowestFree %v, a scan finds %v", step, got, wantFree)
		}
		var wantOld *record
		for _, r := range tb.byMAC {
			if r.static || r.state != LeaseBound && r.state != LeaseReleased || r.expiry.After(now) ||
				r.restored && now.Before(tb.reuseAfter) {
				continue
			}
			if wantOld == nil || r.expiresBefore(wantOld) {
				wantOld = r
			}
		}
		if got := tb.oldestExpired(now); got != wantOld {
			t.Fatalf("step %d: oldestExpired %+v, a scan finds %+v", step, got, wantOld)
		}
		n := 0
		for e := tb.offers.Front(); e != nil; e = e.Next() {
			if r := e.Value.(*record); r.state != LeaseOffered || tb.byMAC[r.mac] != r {
				t.Fatalf("step %d: %+v among the pending offers", step, r)
			}
			n++
		}
		for _, r := range tb.byMAC {
			if r.state == LeaseOffered && r.expiry.After(now) {
				n--
			}
		}
		if n != 0 {
			t.Fatalf("step %d: pending offers and unexpired offered records differ by %d", step, n)
		}
	}
}

// TestTableFreedOnce: an address offered and forgotten over and over (a
// client that takes another server's offer every time) is in the queue of
// freed addresses once; each round added a copy, so that one client grew
// it to twice the pool before it was compacted, under the server's lock.
func TestTableFreedOnce(t *testing.T) {
	clock := newClock()
	tb := testTable(t, Config{Range: Range{ip4("198.18.0.10"), ip4("198.18.0.20")}})
	for i := range 5 {
		mustBind(t, tb, porttest.MAC(10+i), clock.Now())
	}
	m := porttest.MAC(1)
	// m's address behind the scan's position, so that freeing it queues it.
	tb.offer(m, netip.Addr{}, clock.Now(), offerHold)
	tb.offer(porttest.MAC(2), netip.Addr{}, clock.Now(), offerHold)
	tb.forgetOffer(m)
	for range 1000 {
		if _, ok := tb.offer(m, netip.Addr{}, clock.Now(), offerHold); !ok {
			t.Fatal("no offer")
		}
		tb.forgetOffer(m)
	}
	if len(tb.freed) > 1 {
		t.Errorf("%d addresses queued as freed after 1000 offers of one address, want at most 1", len(tb.freed))
	}
}
