package dhcp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/sirupsen/logrus"

	"github.com/tapswitch/tapswitch/internal/logx"
	"github.com/tapswitch/tapswitch/internal/regfile"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

// batchSize is the Server's BatchSize.
const batchSize = 16

// portMTU is what the Server reports as its MTU: it carries no traffic of
// its own larger than an echo reply to a standard-MTU ping.
const portMTU = 1500

var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// Server is the DHCP responder. It implements vswitch.Port; attach it with
//
//	sw.AddPort(srv, vswitch.PortConfig{Kind: "dhcp", DHCPServer: true,
//		DHCPAddr: cfg.Gateway.Addr(), OwnMAC: srv.MAC()})
//
// (DHCPAddr brings it the requests a renewing client sends to the
// gateway's address.)
// Its methods are safe for concurrent use.
type Server struct {
	s    *settings
	log  logrus.FieldLogger
	opts []dhcpv4.Modifier // configuration options of every OFFER and ACK

	out       chan []byte // replies for ReadFrames
	closed    chan struct{}
	closeOnce sync.Once
	// lock holds the lease file's lock (see LockLeaseFile) until Close.
	lock *LeaseLock

	// mu guards the table and everything below. It is held across a
	// lease file write so that the file always follows the table in
	// order; Leases and Stats may wait for one write.
	mu          sync.Mutex
	t           *table
	lazySince   time.Time // when the oldest unwritten lazy change was made
	retryAt     time.Time // after a failed write, when the next may be tried
	lastWritten []byte
	ipID        uint16
	pending     []pendingReply
	limits      [numWarnings]rateLimit

	c counters
}

var (
	_ vswitch.Port           = (*Server)(nil)
	_ vswitch.BackendCounter = (*Server)(nil)
)

// pendingReply is a reply built while handling a batch, queued once the
// lease file is written.
type pendingReply struct {
	frame []byte
	kind  replyKind
	mac   vswitch.MAC // the client's (chaddr)
}

type replyKind uint8

const (
	replyOffer replyKind = iota + 1
	replyAck             // ACK to a REQUEST: needs the client's binding on disk
	replyInformAck
	replyNak
	replyARP
	replyEcho
	replyAnnounce
)

type counters struct {
	discovers, offers, requests, acks, naks, releases, declines, informs atomic.Uint64
	dropped, malformed, exhausted, arpReplies, echoReplies, queueFull    atomic.Uint64
	chaddrMismatch                                                       atomic.Uint64
	leaseWrites, leaseWriteErrors, withheld                              atomic.Uint64
}

// Stats is a snapshot of the responder's counters.
type Stats struct {
	// Messages received, by DHCP message type.
	Discovers uint64 `json:"discovers"`
	Requests  uint64 `json:"requests"`
	Releases  uint64 `json:"releases"`
	Declines  uint64 `json:"declines"`
	Informs   uint64 `json:"informs"`
	// Replies queued, by DHCP message type (Acks includes INFORM ACKs).
	Offers uint64 `json:"offers"`
	Acks   uint64 `json:"acks"`
	Naks   uint64 `json:"naks"`
	// Dropped counts frames that got no answer because they were not for
	// the responder (flooded traffic, a REQUEST naming another server,
	// relayed requests) or could not be parsed; Malformed is the part of
	// Dropped that could not be parsed.
	Dropped   uint64 `json:"dropped"`
	Malformed uint64 `json:"malformed"`
	// ChaddrMismatch is the part of Dropped that named a client (chaddr)
	// other than the frame's Ethernet source: a guest acting for another
	// MAC, e.g. to release another guest's lease or to drain the pool past
	// its port's MAC limit. Relayed messages are not checked (nor
	// answered).
	ChaddrMismatch uint64 `json:"chaddr_mismatch"`
	// PoolExhausted counts DISCOVERs that got no OFFER for want of an
	// address.
	PoolExhausted uint64 `json:"pool_exhausted"`
	// ARPReplies and EchoReplies count answers for the gateway address
	// (Config.AnswerGateway).
	ARPReplies  uint64 `json:"arp_replies"`
	EchoReplies uint64 `json:"echo_replies"`
	// QueueFull counts replies dropped because ReadFrames fell behind.
	QueueFull uint64 `json:"queue_full"`
	// LeaseWrites and LeaseWriteErrors count lease file writes; Withheld
	// counts ACKs not sent because the lease file could not be written
	// with the client's new binding.
	LeaseWrites      uint64 `json:"lease_writes"`
	LeaseWriteErrors uint64 `json:"lease_write_errors"`
	Withheld         uint64 `json:"withheld"`
	// LeasesInUse counts unexpired bindings (static ones included);
	// PoolSize is the number of addresses in the dynamic pool.
	LeasesInUse int `json:"leases_in_use"`
	PoolSize    int `json:"pool_size"`
}

type warning uint8

const (
	warnExhausted warning = iota
	warnLeaseWrite
	warnQueueFull
	warnDecline
	warnChaddr
	numWarnings
)

// rateLimit lets one warning of a kind through per logEvery.
type rateLimit struct {
	next       time.Time
	suppressed int
}

// New returns a responder for cfg. With a cfg.LeaseFile, New first locks
// PATH.lock for the server's life, and fails with ErrLeaseFileInUse if
// another server holds it: two servers writing one file would each drop
// the other's bindings. If cfg.LeaseFile exists it is loaded; if it does
// not, it is created at once, so that a path that cannot be written fails
// here rather than at the first ACK. A corrupt or truncated lease file
// does not fail New: each bad line is logged as "PATH:LINE: reason", the
// file is kept aside as PATH.corrupt-TIMESTAMP, and the server starts with
// the leases that could be read. New fails if the file cannot be read,
// kept aside or rewritten, is not a lease file (its first line is not the
// header: ErrNotLeaseFile) or is of a newer format (ErrLeaseFileVersion);
// it leaves such a file as it is. A rewritten file keeps the permission
// bits of the one it replaces.
func New(cfg Config) (_ *Server, err error) {
	if cfg.LeaseLock != nil {
		defer func() {
			if err != nil {
				cfg.LeaseLock.Close()
			}
		}()
	}
	s, err := cfg.validate()
	if err != nil {
		return nil, fmt.Errorf("dhcp server %v: %w", cfg.Gateway, err)
	}
	log := logx.OrDiscard(s.Logger).WithField("port", "dhcp")
	srv := &Server{
		s:      s,
		log:    log,
		out:    make(chan []byte, s.QueueLen),
		closed: make(chan struct{}),
		t:      newTable(s.subnet, s.start, s.end, s.excluded, s.static),
	}
	if srv.opts, err = s.options(); err != nil {
		return nil, fmt.Errorf("dhcp server %v: %w", cfg.Gateway, err)
	}
	if s.LeaseFile != "" {
		if srv.lock = cfg.LeaseLock; srv.lock == nil {
			if srv.lock, err = LockLeaseFile(s.LeaseFile); err != nil {
				return nil, fmt.Errorf("dhcp server: %w", err)
			}
		}
		if err := srv.load(); err != nil {
			srv.lock.Close()
			return nil, err
		}
	}
	if s.AnswerGateway {
		// Announce the gateway: refreshes stale ARP caches and teaches
		// the switch the responder's MAC before anyone asks.
		srv.enqueue(buildARP(broadcastMAC, arpPacket{op: arpRequest, sha: s.MAC, spa: s.gw, tpa: s.gw}), replyAnnounce, s.Now())
	}
	log.WithFields(logrus.Fields{
		"mac": s.MAC, "gateway": s.Gateway, "range": Range{s.start, s.end}.String(), "pool": srv.t.poolSize,
		"static": len(s.static), "leases": len(srv.t.byMAC), "lease_file": s.LeaseFile, "answer_gateway": s.AnswerGateway,
	}).Info("dhcp responder ready")
	return srv, nil
}

// sampleRequest is a REQUEST with a typical client identifier, used to
// check that replies fit.
func sampleRequest() *dhcpv4.DHCPv4 {
	return &dhcpv4.DHCPv4{
		OpCode: dhcpv4.OpcodeBootRequest, HWType: iana.HWTypeEthernet, ClientHWAddr: make(net.HardwareAddr, 6),
		Options: dhcpv4.OptionsFromList(dhcpv4.OptClientIdentifier(make([]byte, 19))),
	}
}

// load reads the lease file into the table; see New.
func (srv *Server) load() error {
	path := srv.s.LeaseFile
	now := srv.s.Now()
	data, err := regfile.Read(path, leaseFileLimit(srv.t.poolSize))
	if err == nil && len(data) == 0 {
		// Made beforehand (touch, then chmod: the mode is kept), not by a
		// write of ours, which replaces the file whole: an empty lease file.
		err = os.ErrNotExist
	}
	if errors.Is(err, os.ErrNotExist) {
		if err := srv.persist(now, true); err != nil {
			return fmt.Errorf("dhcp server: create lease file: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("dhcp server: load lease file: %w", err)
	}
	file, perr := parseLeaseFile(path, data)
	if errors.Is(perr, ErrLeaseFileVersion) || errors.Is(perr, ErrNotLeaseFile) {
		return fmt.Errorf("dhcp server: load lease file: %w (refusing to replace it)", perr)
	}
	kept := 0
	var conflicts []string
	// A lease time shortened since the file was written does not shorten
	// the wait: clients may hold leases of the old one.
	srv.t.reuseAfter = now.Add(max(srv.s.LeaseTime, file.leaseTime))
	for _, l := range file.leases {
		if srv.t.load(l) {
			kept++
		} else {
			conflicts = append(conflicts, l.MAC.String()+"="+l.IP.String())
		}
	}
	if perr != nil {
		aside, err := keepAside(path, data, now)
		if err != nil {
			return fmt.Errorf("dhcp server: lease file %s is corrupt (%v) and cannot be kept aside: %w", path, perr, err)
		}
		for _, e := range unjoin(perr) {
			srv.log.WithFields(logrus.Fields{"copy": aside}).Error(e.Error())
		}
		srv.log.WithFields(logrus.Fields{"file": path, "copy": aside, "leases": kept}).
			Error("lease file corrupt or truncated: kept a copy aside, starting with the leases that could be read")
	}
	if len(conflicts) > 0 {
		srv.log.WithFields(logrus.Fields{"file": path, "leases": conflicts}).
			Warn("lease file entries dropped: outside the pool, on a static address, or for a MAC that now has a static lease")
	}
	srv.t.dirty = false
	srv.lastWritten = data
	if perr != nil || len(conflicts) > 0 {
		srv.t.dirty = true // rewrite the file as it now stands
		if err := srv.persist(now, true); err != nil {
			return fmt.Errorf("dhcp server: rewrite lease file: %w", err)
		}
	}
	return nil
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// MAC returns the responder's Ethernet address.
func (srv *Server) MAC() vswitch.MAC { return srv.s.MAC }

// options returns configOptions for s, or an error if they make a reply
// larger than every client accepts.
func (s *settings) options() ([]dhcpv4.Modifier, error) {
	srv := &Server{s: s}
	srv.opts = srv.configOptions()
	if n := len(srv.reply(sampleRequest(), dhcpv4.MessageTypeAck, s.end, true).ToBytes()); n > maxReplyLen {
		return nil, &ConfigError{Field: "Options", msg: fmt.Sprintf(
			"DNS servers, domain and search list take a %d-byte reply, more than the %d bytes every client accepts (shorten them)",
			n, maxReplyLen)}
	}
	return srv.opts, nil
}

// configOptions returns the modifiers adding the configured options.
func (srv *Server) configOptions() []dhcpv4.Modifier {
	s := srv.s
	mods := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(s.subnet.Bits(), 32))),
		dhcpv4.WithOption(dhcpv4.OptRouter(s.gw.AsSlice())),
	}
	if len(s.DNS) > 0 {
		ips := make([]net.IP, len(s.DNS))
		for i, a := range s.DNS {
			ips[i] = a.AsSlice()
		}
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(ips...)))
	}
	if s.Domain != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(s.Domain)))
	}
	if len(s.Search) > 0 {
		mods = append(mods, dhcpv4.WithDomainSearchList(s.Search...))
	}
	if s.MTU != 0 {
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionInterfaceMTU, binary.BigEndian.AppendUint16(nil, uint16(s.MTU))))
	}
	return mods
}

// newReply is dhcpv4.NewReplyFromRequest without its random transaction
// ID, which WithReply overwrites anyway: drawing it reads getrandom in a
// loop that can spin for up to dhcpv4.RandomTimeout before the kernel's
// random pool is ready, which has no place on the data path. Unlike it,
// newReply echoes the client identifier and relay agent information only
// when they fit in one option (withOptionEchoed).
func newReply(req *dhcpv4.DHCPv4, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	d := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootRequest,
		HWType:        iana.HWTypeEthernet,
		ClientHWAddr:  make(net.HardwareAddr, 6),
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: net.IPv4zero,
		Options:       make(dhcpv4.Options),
	}
	for _, m := range append([]dhcpv4.Modifier{
		dhcpv4.WithReply(req),
		dhcpv4.WithGatewayIP(req.GatewayIPAddr),
		withOptionEchoed(req, dhcpv4.OptionRelayAgentInformation),
		withOptionEchoed(req, dhcpv4.OptionClientIdentifier), // RFC 6842
	}, mods...) {
		m(d)
	}
	return d
}

// maxEchoLen is the longest option value a reply echoes: what one option
// holds. The codec joins an option sent several times into one value (RFC
// 3396), which echoed whole made a reply of up to ~8 KB.
const maxEchoLen = 255

// withOptionEchoed is dhcpv4.WithOptionCopied for an option whose value
// fits in one option; a longer one is left out.
func withOptionEchoed(req *dhcpv4.DHCPv4, code dhcpv4.OptionCode) dhcpv4.Modifier {
	return func(d *dhcpv4.DHCPv4) {
		if v := req.Options.Get(code); v != nil && len(v) <= maxEchoLen {
			d.UpdateOption(dhcpv4.OptGeneric(code, v))
		}
	}
}

// reply builds a reply of type mt to req offering or acknowledging yiaddr
// (invalid: none), with the lease options if lease is set.
func (srv *Server) reply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, yiaddr netip.Addr, lease bool) *dhcpv4.DHCPv4 {
	s := srv.s
	d := newReply(req,
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.gw.AsSlice())),
	)
	if mt == dhcpv4.MessageTypeNak {
		return d // RFC 2131 table 3: no address, no parameters
	}
	if mt == dhcpv4.MessageTypeAck {
		d.ClientIPAddr = req.ClientIPAddr
	}
	if yiaddr.IsValid() {
		d.YourIPAddr = yiaddr.AsSlice()
	}
	for _, m := range srv.opts {
		m(d)
	}
	if lease {
		d.UpdateOption(dhcpv4.OptIPAddressLeaseTime(s.LeaseTime))
		d.UpdateOption(dhcpv4.OptRenewTimeValue(s.t1))
		d.UpdateOption(dhcpv4.OptRebindingTimeValue(s.t2))
	}
	return d
}

// ReadFrames implements vswitch.Port: it returns the replies the responder
// has produced, blocking until there is one or the Server is closed. A
// reply larger than a buffer is dropped and counted in QueueFull.
func (srv *Server) ReadFrames(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	n := 0
	for n == 0 {
		var f []byte
		select {
		case <-srv.closed:
			return 0, net.ErrClosed
		default:
		}
		select {
		case f = <-srv.out:
		case <-srv.closed:
			return 0, net.ErrClosed
		}
		for {
			if offset <= len(bufs[n]) && len(f) <= len(bufs[n])-offset {
				sizes[n] = copy(bufs[n][offset:], f)
				n++
			} else {
				srv.c.queueFull.Add(1)
			}
			if n == len(bufs) {
				return n, nil
			}
			select {
			case f = <-srv.out:
				continue
			default:
			}
			break
		}
	}
	return n, nil
}

// WriteFrames implements vswitch.Port: it handles each frame at once and
// queues the replies for ReadFrames, after writing the lease file if the
// batch changed a binding. If the write fails, the ACKs of clients whose
// new binding the file does not hold yet are not sent (the clients
// retry); renewals of bindings it holds are. Every frame is consumed (n == len(bufs)) unless
// the Server is closed; frames that are not for the responder are counted
// as dropped.
func (srv *Server) WriteFrames(bufs [][]byte, offset int) (int, error) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	select {
	case <-srv.closed:
		return 0, net.ErrClosed
	default:
	}
	now := srv.s.Now()
	srv.pending = srv.pending[:0]
	for _, b := range bufs {
		if offset > len(b) {
			srv.malformed()
			continue
		}
		srv.handle(b[offset:], now)
	}
	srv.persist(now, false) // a failure is counted, logged, and withholds ACKs below
	for i, p := range srv.pending {
		// A renewal of a binding the file holds is acknowledged even if
		// the write failed: a full disk must not cost every VM its
		// address as its lease runs out.
		if _, unsaved := srv.t.unsaved[p.mac]; unsaved && p.kind == replyAck {
			srv.c.withheld.Add(1)
		} else {
			srv.enqueue(p.frame, p.kind, now)
		}
		srv.pending[i] = pendingReply{}
	}
	return len(bufs), nil
}

// BatchSize implements vswitch.Port.
func (srv *Server) BatchSize() int { return batchSize }

// MTU implements vswitch.Port.
func (srv *Server) MTU() int { return portMTU }

// String implements vswitch.Port.
func (srv *Server) String() string { return "dhcp" }

// Close implements vswitch.Port. It writes any lazily kept lease changes
// to the lease file and releases the file's lock, even if that write
// fails; the first call returns the error of that write.
func (srv *Server) Close() error {
	err := net.ErrClosed
	srv.closeOnce.Do(func() {
		close(srv.closed)
		srv.mu.Lock()
		defer srv.mu.Unlock()
		err = srv.persist(srv.s.Now(), true)
		if err != nil {
			err = fmt.Errorf("dhcp server: close: %w", err)
		}
		if srv.lock != nil {
			srv.lock.Close()
		}
	})
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Flush writes lease changes kept lazily (extended expiries) to the lease
// file now. It does nothing without a lease file, or after Close, which
// wrote the file and gave up its lock.
func (srv *Server) Flush() error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	select {
	case <-srv.closed:
		return nil
	default:
	}
	return srv.persist(srv.s.Now(), true)
}

// Leases returns a snapshot of the lease table ordered by address: every
// offer, binding (expired ones included) and release, every static lease,
// and every address held out of the pool after a decline.
func (srv *Server) Leases() []Lease {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.t.expire(srv.s.Now()) // lapsed offers of a release or expired binding: what they displaced
	return srv.t.snapshot()
}

// BackendCounters implements vswitch.BackendCounter: the counters of Stats
// (but the two gauges), by their JSON names, so that `ctl ports --json`
// and /metrics (tapswitch_port_backend_total) show them on the responder's
// port.
func (srv *Server) BackendCounters() map[string]uint64 {
	c := &srv.c
	return map[string]uint64{
		"discovers": c.discovers.Load(), "requests": c.requests.Load(), "releases": c.releases.Load(),
		"declines": c.declines.Load(), "informs": c.informs.Load(),
		"offers": c.offers.Load(), "acks": c.acks.Load(), "naks": c.naks.Load(),
		"dropped": c.dropped.Load(), "malformed": c.malformed.Load(), "chaddr_mismatch": c.chaddrMismatch.Load(),
		"pool_exhausted": c.exhausted.Load(), "arp_replies": c.arpReplies.Load(), "echo_replies": c.echoReplies.Load(),
		"queue_full": c.queueFull.Load(), "lease_writes": c.leaseWrites.Load(),
		"lease_write_errors": c.leaseWriteErrors.Load(), "withheld": c.withheld.Load(),
	}
}

// Stats returns the responder's counters.
func (srv *Server) Stats() Stats {
	c := &srv.c
	st := Stats{
		Discovers: c.discovers.Load(), Requests: c.requests.Load(), Releases: c.releases.Load(),
		Declines: c.declines.Load(), Informs: c.informs.Load(),
		Offers: c.offers.Load(), Acks: c.acks.Load(), Naks: c.naks.Load(),
		Dropped: c.dropped.Load(), Malformed: c.malformed.Load(), ChaddrMismatch: c.chaddrMismatch.Load(), PoolExhausted: c.exhausted.Load(),
		ARPReplies: c.arpReplies.Load(), EchoReplies: c.echoReplies.Load(), QueueFull: c.queueFull.Load(),
		LeaseWrites: c.leaseWrites.Load(), LeaseWriteErrors: c.leaseWriteErrors.Load(), Withheld: c.withheld.Load(),
	}
	srv.mu.Lock()
	st.LeasesInUse = srv.t.inUse(srv.s.Now())
	st.PoolSize = srv.t.poolSize
	srv.mu.Unlock()
	return st
}

// errWriteDeferred: persist did not try the write, one having failed less
// than writeRetry ago.
var errWriteDeferred = errors.New("lease file write deferred: the last one failed just now")

// persist writes the table to the lease file if a durable change is
// pending, or a lazy one is due (or force is set and any is pending). A
// successful write empties t.unsaved. After a failed write, the next is
// tried writeRetry later at the earliest, unless force is set.
func (srv *Server) persist(now time.Time, force bool) error {
	t := srv.t
	if srv.s.LeaseFile == "" {
		t.dirty, t.lazy = false, false
		clear(t.unsaved)
		return nil
	}
	if t.lazy && srv.lazySince.IsZero() {
		srv.lazySince = now
	}
	due := t.dirty || t.lazy && (force || now.Sub(srv.lazySince) >= lazyFlush) || force && srv.lastWritten == nil
	if !due {
		return nil
	}
	if !force && now.Before(srv.retryAt) {
		// A write failed just now: not again for every frame that comes
		// in (every flooded ARP). New bindings wait, unacknowledged.
		return errWriteDeferred
	}
	data := encodeLeaseFile(t.persistent(), max(srv.s.LeaseTime, t.reuseAfter.Sub(now)))
	if !bytes.Equal(data, srv.lastWritten) {
		if err := writeFileAtomic(srv.s.LeaseFile, data, 0o644); err != nil {
			srv.retryAt = now.Add(writeRetry)
			srv.c.leaseWriteErrors.Add(1)
			srv.warn(warnLeaseWrite, now, srv.log.WithError(err),
				"cannot write the lease file: new bindings are not acknowledged until it can be written (renewals of bindings it holds are)")
			return err
		}
		srv.c.leaseWrites.Add(1)
		srv.lastWritten = data
		srv.retryAt = time.Time{} // written: the next may come at once
	}
	t.dirty, t.lazy = false, false
	clear(t.unsaved)
	srv.lazySince = time.Time{}
	return nil
}

// warn logs msg unless a warning of the same kind was logged within
// logEvery; the next one that is logged says how many were suppressed.
func (srv *Server) warn(w warning, now time.Time, l logrus.FieldLogger, msg string) {
	r := &srv.limits[w]
	if now.Before(r.next) {
		r.suppressed++
		return
	}
	if r.suppressed > 0 {
		l = l.WithField("suppressed", r.suppressed)
	}
	l.Warn(msg)
	r.next = now.Add(logEvery)
	r.suppressed = 0
}

// enqueue hands a reply to ReadFrames and counts it. The count comes
// first, so that a client that has the reply finds it counted; a reply the
// full queue refuses is taken off again.
func (srv *Server) enqueue(f []byte, kind replyKind, now time.Time) {
	c := &srv.c
	var n *atomic.Uint64
	switch kind {
	case replyOffer:
		n = &c.offers
	case replyAck, replyInformAck:
		n = &c.acks
	case replyNak:
		n = &c.naks
	case replyARP:
		n = &c.arpReplies
	case replyEcho:
		n = &c.echoReplies
	}
	if n != nil {
		n.Add(1)
	}
	select {
	case srv.out <- f:
	default:
		if n != nil {
			n.Add(^uint64(0))
		}
		c.queueFull.Add(1)
		srv.warn(warnQueueFull, now, srv.log, "reply queue full: dropping replies")
	}
}

func (srv *Server) dropped() { srv.c.dropped.Add(1) }

func (srv *Server) malformed() {
	srv.c.dropped.Add(1)
	srv.c.malformed.Add(1)
}

func (srv *Server) nextID() uint16 {
	srv.ipID++
	return srv.ipID
}

// handle answers one frame, appending any reply to srv.pending.
func (srv *Server) handle(f []byte, now time.Time) {
	if len(f) < etherHeaderLen {
		srv.malformed()
		return
	}
	dst, src := vswitch.MAC(f[0:6]), vswitch.MAC(f[6:12])
	switch binary.BigEndian.Uint16(f[12:14]) {
	case etherTypeIPv4:
		srv.handleIPv4(dst, src, f[etherHeaderLen:], now)
	case etherTypeARP:
		srv.handleARP(f[etherHeaderLen:])
	default:
		srv.dropped()
	}
}

func (srv *Server) handleIPv4(dst, src vswitch.MAC, b []byte, now time.Time) {
	p, frag, ok := parseIPv4(b)
	switch {
	case !ok:
		srv.malformed()
	case frag:
		srv.dropped()
	case p.proto == protoUDP:
		if len(p.payload) < 4 || binary.BigEndian.Uint16(p.payload[2:4]) != portServer {
			srv.dropped()
			return
		}
		_, _, data, ok := parseUDP(p)
		if !ok {
			srv.malformed()
			return
		}
		srv.handleDHCP(src, p, data, now)
	case p.proto == protoICMP:
		srv.handleICMP(dst, src, p)
	default:
		srv.dropped()
	}
}

// addr4 converts a 4-byte net.IP from the codec; anything else is the
// invalid Addr.
func addr4(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok {
		return netip.Addr{}
	}
	return a
}

// mayComeFromElsewhere reports whether req, sent to dst and naming the
// client mac, may come from another MAC: a renewal of mac's binding, which
// a guest with two interfaces on the segment sends out of whichever its
// route picks, and an INFORM; neither takes an address from anyone. A
// renewal is a REQUEST in RENEWING state exactly (RFC 2131 4.3.2): unicast
// to the server, ciaddr the address bound to mac, no server identifier and
// no requested address (which the REQUEST's handling would take instead
// of ciaddr, moving the binding). Everything else must come from mac.
func (srv *Server) mayComeFromElsewhere(req *dhcpv4.DHCPv4, dst netip.Addr, mac vswitch.MAC) bool {
	switch req.MessageType() {
	case dhcpv4.MessageTypeInform:
		return true
	case dhcpv4.MessageTypeRequest:
		r := srv.t.byMAC[mac]
		ciaddr := addr4(req.ClientIPAddr)
		return dst == srv.s.gw && r != nil && r.state == LeaseBound && ciaddr.IsValid() && r.ip == ciaddr &&
			!req.Options.Has(dhcpv4.OptionRequestedIPAddress) && !req.Options.Has(dhcpv4.OptionServerIdentifier)
	}
	return false
}

func (srv *Server) handleDHCP(src vswitch.MAC, p ipv4Packet, data []byte, now time.Time) {
	s := srv.s
	if p.dst != limitedBroadcast && p.dst != s.gw && p.dst != s.bcast {
		srv.dropped() // unicast to another server
		return
	}
	req, err := dhcpv4.FromBytes(data)
	if err != nil || req.OpCode != dhcpv4.OpcodeBootRequest || req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		srv.malformed()
		return
	}
	mac := vswitch.MAC(req.ClientHWAddr)
	if mac.Multicast() || mac == (vswitch.MAC{}) {
		srv.malformed()
		return
	}
	if a := addr4(req.GatewayIPAddr); a.IsValid() && !a.IsUnspecified() {
		srv.dropped() // relayed: not this segment
		return
	}
	c := &srv.c
	foreign := mac != src
	if foreign && !srv.mayComeFromElsewhere(req, p.dst, mac) {
		// Leases are keyed by chaddr, and the switch's port security
		// (--lock-mac, --max-macs-per-port) applies to the Ethernet
		// source: a message not relayed must come from the client it
		// names, or a guest could release or decline another's lease.
		c.chaddrMismatch.Add(1)
		srv.dropped()
		srv.warn(warnChaddr, now, srv.log.WithFields(logrus.Fields{"mac": mac, "src": src, "type": req.MessageType()}),
			"DHCP message naming another client than the frame's source dropped")
		return
	}
	sid := addr4(req.ServerIdentifier())
	otherServer := sid.IsValid() && sid != s.gw
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		c.discovers.Add(1)
		ip, ok := srv.t.offer(mac, addr4(req.RequestedIPAddress()), now, offerHold)
		if !ok {
			c.exhausted.Add(1)
			srv.warn(warnExhausted, now, srv.log.WithFields(logrus.Fields{"mac": mac, "pool": srv.t.poolSize}),
				"address pool exhausted: no offer (widen --dhcp-range, or shorten the lease time: expired bindings from the lease file are reused one previous lease time after the start)")
			return
		}
		srv.queueReply(req, srv.reply(req, dhcpv4.MessageTypeOffer, ip, true), replyOffer)
	case dhcpv4.MessageTypeRequest:
		c.requests.Add(1)
		if otherServer {
			// SELECTING another server's offer (RFC 2131 §4.3.2).
			srv.t.forgetOffer(mac)
			srv.dropped()
			return
		}
		ip := addr4(req.RequestedIPAddress())
		if !ip.IsValid() || ip.IsUnspecified() {
			ip = addr4(req.ClientIPAddr) // RENEWING or REBINDING
		}
		if !ip.IsValid() || ip.IsUnspecified() {
			srv.malformed()
			return
		}
		if !s.subnet.Contains(ip) {
			srv.nak(req, "requested address is not on this network")
			return
		}
		hostname := sanitizeHostname(req.HostName())
		if foreign {
			hostname = "" // a renewal from another MAC does not rename the client
		}
		if srv.t.bind(mac, ip, hostname, now, s.LeaseTime) == bindRefused {
			srv.nak(req, "requested address is not available")
			return
		}
		srv.queueReply(req, srv.reply(req, dhcpv4.MessageTypeAck, ip, true), replyAck)
	case dhcpv4.MessageTypeRelease:
		c.releases.Add(1)
		if otherServer || !srv.t.release(mac, addr4(req.ClientIPAddr), now) {
			srv.dropped()
		}
	case dhcpv4.MessageTypeDecline:
		c.declines.Add(1)
		ip := addr4(req.RequestedIPAddress())
		if otherServer || !ip.IsValid() {
			srv.dropped()
			return
		}
		ok, static := srv.t.decline(mac, ip, now, DeclineHold)
		l := srv.log.WithFields(logrus.Fields{"mac": mac, "ip": ip})
		switch {
		case !ok:
			srv.dropped()
		case static:
			srv.warn(warnDecline, now, l, "client declined its static address: another host uses it")
		default:
			srv.warn(warnDecline, now, l.WithField("hold", DeclineHold), "client declined its address: another host uses it; held out of the pool")
		}
	case dhcpv4.MessageTypeInform:
		c.informs.Add(1)
		srv.queueReply(req, srv.reply(req, dhcpv4.MessageTypeAck, netip.Addr{}, false), replyInformAck)
	default:
		srv.dropped()
	}
}

func (srv *Server) nak(req *dhcpv4.DHCPv4, msg string) {
	d := srv.reply(req, dhcpv4.MessageTypeNak, netip.Addr{}, false)
	d.UpdateOption(dhcpv4.OptMessage(msg))
	srv.queueReply(req, d, replyNak)
}

// queueReply frames resp, addressed per RFC 2131 §4.1 (giaddr is zero):
// a NAK is broadcast; else a reply goes to ciaddr if the client has one;
// else it is broadcast if the client asked so; else it goes to yiaddr at
// chaddr.
func (srv *Server) queueReply(req, resp *dhcpv4.DHCPv4, kind replyKind) {
	s := srv.s
	dstMAC, dstIP := broadcastMAC, limitedBroadcast
	chaddr := vswitch.MAC(req.ClientHWAddr)
	ciaddr, yiaddr := addr4(req.ClientIPAddr), addr4(resp.YourIPAddr)
	switch {
	case kind == replyNak:
	case ciaddr.IsValid() && !ciaddr.IsUnspecified():
		dstMAC, dstIP = chaddr, ciaddr
	case req.IsBroadcast():
	case yiaddr.IsValid() && !yiaddr.IsUnspecified():
		dstMAC, dstIP = chaddr, yiaddr
	}
	f := buildUDP(dstMAC, s.MAC, srv.nextID(), s.gw, dstIP, portServer, portClient, resp.ToBytes())
	srv.pending = append(srv.pending, pendingReply{frame: f, kind: kind, mac: chaddr})
}

func (srv *Server) handleARP(b []byte) {
	s := srv.s
	if !s.AnswerGateway {
		srv.dropped()
		return
	}
	a, ok := parseARP(b)
	if !ok {
		srv.malformed()
		return
	}
	// Answer requests for the gateway, probes (spa 0.0.0.0, RFC 5227)
	// included, but not another host's announcement of it.
	if a.op != arpRequest || a.tpa != s.gw || a.spa == s.gw || a.sha.Multicast() {
		srv.dropped()
		return
	}
	f := buildARP(a.sha, arpPacket{op: arpReply, sha: s.MAC, spa: s.gw, tha: a.sha, tpa: a.spa})
	srv.pending = append(srv.pending, pendingReply{frame: f, kind: replyARP})
}

func (srv *Server) handleICMP(dst, src vswitch.MAC, p ipv4Packet) {
	s := srv.s
	if !s.AnswerGateway || p.dst != s.gw || dst != s.MAC {
		srv.dropped()
		return
	}
	m := p.payload
	if len(m) < 8 || checksum(m, 0) != 0 {
		srv.malformed()
		return
	}
	if m[0] != icmpEchoRequest || m[1] != 0 || !p.src.IsValid() || p.src.IsUnspecified() || p.src.IsMulticast() || p.src == limitedBroadcast {
		srv.dropped()
		return
	}
	f := buildEchoReply(src, s.MAC, srv.nextID(), s.gw, p.src, m)
	srv.pending = append(srv.pending, pendingReply{frame: f, kind: replyEcho})
}
