package vswitch

import (
	"encoding/json"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// DropReason says why the switch discarded a frame. The zero value is not a
// valid reason.
type DropReason uint8

// Drop reasons. Ingress reasons are counted on the port the frame came in
// on; DropQueueFull and DropTxError on the port it was meant to leave by.
const (
	_ DropReason = iota
	// DropTooShort: shorter than an Ethernet header (14 bytes).
	DropTooShort
	// DropTooLong: longer than Config.MaxFrame.
	DropTooLong
	// DropSrcMulticast: the source MAC has the group bit set, which no
	// station may send, or is all zeros.
	DropSrcMulticast
	// DropSamePort: the destination MAC was learned on the ingress port, so
	// the frame would have to go back out where it came in (hairpin).
	DropSamePort
	// DropQueueFull: the egress port's transmit queue was full (frames or
	// bytes).
	DropQueueFull
	// DropTxError: the egress port failed to write the frame, or left the
	// switch with the frame still queued.
	DropTxError
	// DropLockedMAC: the ingress port is locked to another source MAC
	// (PortConfig.LockMAC).
	DropLockedMAC
	// DropBadOffload: the frame's virtio-net header (OffloadPort) does not
	// match the frame, asks for an offload the switch does not do, or for
	// segments smaller than Linux's smallest TCP MSS (88 bytes).
	DropBadOffload
	numDropReasons
)

var dropNames = [numDropReasons]string{
	DropTooShort:     "too_short",
	DropTooLong:      "too_long",
	DropSrcMulticast: "src_multicast",
	DropSamePort:     "same_port",
	DropQueueFull:    "queue_full",
	DropTxError:      "tx_error",
	DropLockedMAC:    "locked_mac",
	DropBadOffload:   "bad_offload",
}

// String returns the reason's name as used in statistics and metrics.
func (r DropReason) String() string {
	if r == 0 || r >= numDropReasons {
		return "invalid"
	}
	return dropNames[r]
}

// DropReasons lists every valid drop reason in order.
func DropReasons() []DropReason {
	rs := make([]DropReason, 0, numDropReasons-1)
	for r := DropReason(1); r < numDropReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}

// DropCounts holds one counter per drop reason, indexed by DropReason.
type DropCounts [numDropReasons]uint64

// String lists the non-zero counters as reason=n,... ("0" if none).
func (d DropCounts) String() string {
	var parts []string
	for _, r := range DropReasons() {
		if d[r] != 0 {
			parts = append(parts, r.String()+"="+strconv.FormatUint(d[r], 10))
		}
	}
	if parts == nil {
		return "0"
	}
	return strings.Join(parts, ",")
}

// Total is the sum over all reasons.
func (d *DropCounts) Total() uint64 {
	var t uint64
	for _, v := range d {
		t += v
	}
	return t
}

// MarshalJSON encodes the counters as an object keyed by reason name.
func (d DropCounts) MarshalJSON() ([]byte, error) {
	m := make(map[string]uint64, numDropReasons)
	for _, r := range DropReasons() {
		m[r.String()] = d[r]
	}
	return json.Marshal(m)
}

// UnmarshalJSON decodes what MarshalJSON encodes; unknown reasons are
// ignored so that older clients read newer servers.
func (d *DropCounts) UnmarshalJSON(b []byte) error {
	var m map[string]uint64
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	for _, r := range DropReasons() {
		d[r] = m[r.String()]
	}
	return nil
}

func (d *DropCounts) add(o *DropCounts) {
	for i := range d {
		d[i] += o[i]
	}
}

// PortStats is a snapshot of one port's counters.
type PortStats struct {
	ID       int        `json:"id"`
	Name     string     `json:"name"`
	Kind     string     `json:"kind"`
	Peer     string     `json:"peer,omitempty"`
	Added    time.Time  `json:"added"`
	Removed  bool       `json:"removed,omitempty"`
	RxFrames uint64     `json:"rx_frames"`
	RxBytes  uint64     `json:"rx_bytes"`
	TxFrames uint64     `json:"tx_frames"`
	TxBytes  uint64     `json:"tx_bytes"`
	Drops    DropCounts `json:"drops"`
	// RxAnswers counts frames of a Poller port (a tap) read by the
	// goroutine that had just written into it (see Poller): answers
	// forwarded without a wakeup. They are part of RxFrames.
	RxAnswers uint64 `json:"rx_answers"`
	// TxCoalesced counts frames written to the port merged into UDP
	// super-frames (see UDPSegmentPort) or TCP super-frames (to an
	// OffloadPort, see offload.TCPCoalescer). They are part of TxFrames, which
	// counts the frames the switch received, not the writes.
	TxCoalesced uint64 `json:"tx_coalesced"`
	// LearnedMACs is the number of addresses learned on the port; LearnRefused
	// counts addresses not learned because of the port's MaxMACs or
	// NewMACRate; LockedMAC is the address a LockMAC port is bound to.
	LearnedMACs  int    `json:"learned_macs"`
	LearnRefused uint64 `json:"learn_refused"`
	LockedMAC    *MAC   `json:"locked_mac,omitempty"`
	// Backend holds the port's own counters (BackendCounter), if it keeps
	// any; they are not part of the totals.
	Backend map[string]uint64 `json:"backend,omitempty"`
}

// Stats is a snapshot of the whole switch.
type Stats struct {
	// Ports lists the live ports in the order they were added.
	Ports []PortStats `json:"ports"`
	// Departed lists the most recently removed ports (at most
	// maxDeparted) with their final counters.
	Departed []PortStats `json:"departed,omitempty"`
	// Totals sums the counters of every port the switch ever had.
	Totals PortStats `json:"totals"`
	// Forwarded counts frames sent to exactly one port by FDB lookup;
	// Flooded counts frames sent to every other port.
	Forwarded uint64 `json:"forwarded"`
	Flooded   uint64 `json:"flooded"`
	// Wakeups counts the timer wakeups Config.WarmInterval scheduled
	// while traffic was sparse, so that their cost can be seen.
	Wakeups uint64   `json:"warm_wakeups"`
	FDB     FDBStats `json:"fdb"`
	// Limits are the switch's resource bounds in force.
	Limits Limits `json:"limits"`
}

// Limits are the bounds a switch runs with (see Config); zero means none.
type Limits struct {
	MaxPorts   int `json:"max_ports"`
	QueueLen   int `json:"queue_len"`
	QueueBytes int `json:"queue_bytes"`
	MaxFrame   int `json:"max_frame"`
}

// FDBStats describes the forwarding database.
type FDBStats struct {
	Size     int           `json:"size"`
	Max      int           `json:"max"`
	Learned  uint64        `json:"learned"`
	Moved    uint64        `json:"moved"`
	Refused  uint64        `json:"refused"`
	Expired  uint64        `json:"expired"`
	Purged   uint64        `json:"purged"`
	AgeLimit time.Duration `json:"age_limit_ns"`
}

// portCounters are updated by the port's receive side (rx*, ingress drops)
// and by transmit sides (tx*, egress drops). The padding keeps the two
// groups on different cache lines.
type portCounters struct {
	rxFrames, rxBytes atomic.Uint64
	rxAnswers         atomic.Uint64
	_                 [40]byte
	txFrames, txBytes atomic.Uint64
	txCoalesced       atomic.Uint64
	_                 [40]byte
	drops             [numDropReasons]atomic.Uint64
	learnRefused      atomic.Uint64
}

func (c *portCounters) snapshot(ps *PortStats) {
	ps.RxFrames = c.rxFrames.Load()
	ps.RxBytes = c.rxBytes.Load()
	ps.RxAnswers = c.rxAnswers.Load()
	ps.TxFrames = c.txFrames.Load()
	ps.TxBytes = c.txBytes.Load()
	ps.TxCoalesced = c.txCoalesced.Load()
	for i := range c.drops {
		ps.Drops[i] = c.drops[i].Load()
	}
	ps.LearnRefused = c.learnRefused.Load()
}

func (ps *PortStats) addCounters(o *PortStats) {
	ps.RxFrames += o.RxFrames
	ps.RxBytes += o.RxBytes
	ps.RxAnswers += o.RxAnswers
	ps.TxFrames += o.TxFrames
	ps.TxBytes += o.TxBytes
	ps.TxCoalesced += o.TxCoalesced
	ps.Drops.add(&o.Drops)
	ps.LearnRefused += o.LearnRefused
}
