package vswitch

// Headroom is the number of bytes the switch reserves in front of every
// frame it hands to Port.WriteFrames, and the offset it passes to
// Port.ReadFrames. A port may use bufs[i][offset-Headroom:offset] as scratch
// space: the stream port writes its 4-byte length prefix there so that a
// frame goes out in one write, and a tap opened with IFF_VNET_HDR can place
// its 10-byte virtio-net header (offload.HdrLen) there.
const Headroom = 16

// Port is one leg of the switch: a tap device, a VM's socket, the host
// interface, or an in-process endpoint such as the DHCP responder.
//
// The contract follows wireguard-go's tun.Device:
//
//   - ReadFrames reads up to len(bufs) frames. Frame i is written into
//     bufs[i][offset:] and its length stored in sizes[i]; the number of frames
//     read is returned. The caller owns bufs and sizes, len(bufs) is at most
//     BatchSize, every buffer has room for offset+MaxFrame bytes (but see
//     SizedReader), and offset >= Headroom. ReadFrames blocks until at
//     least one frame is available or the port fails. It returns an error
//     only when the port can no longer deliver frames (peer gone, device
//     deleted, Close called); the switch then removes the port. Per-frame
//     trouble (a malformed frame from a peer that is otherwise fine) is the
//     port's to count or to turn into an error that ends the port, never a
//     panic.
//   - WriteFrames writes the frames bufs[i][offset:] and returns how many were
//     written. The caller owns bufs; the port must not keep them after it
//     returns. The port may scribble on bufs[i][offset-Headroom:offset].
//     WriteFrames may block (the switch calls it from the port's own transmit
//     goroutine only), but a port should give up on a frame it cannot deliver
//     rather than block forever. An error for some frames is reported with
//     n < len(bufs); the switch counts the rest as dropped and carries on.
//   - BatchSize is the largest batch ReadFrames and WriteFrames handle. It is
//     constant for the life of the port and at least 1.
//   - MTU is the largest frame payload (without the 14-byte Ethernet header)
//     the port expects to carry; the switch uses it for information only.
//   - Close is idempotent and safe to call concurrently with ReadFrames and
//     WriteFrames: it unblocks them, and every later call returns an error
//     matching net.ErrClosed.
//   - String names the port for logs and statistics, e.g. "tap0" or
//     "unix:/run/tapswitch/tapswitch.sock#3".
type Port interface {
	ReadFrames(bufs [][]byte, sizes []int, offset int) (int, error)
	WriteFrames(bufs [][]byte, offset int) (int, error)
	BatchSize() int
	MTU() int
	Close() error
	String() string
}

// SizedReader is implemented by ports whose ReadFrames knows a frame's
// length before it reads the frame, as a stream port does from the length
// prefix. The switch gives such a port one receive buffer with room for
// Config.MaxFrame bytes and smaller ones (1536 bytes, a full frame of a
// 1500-byte MTU with a VLAN tag) for the rest of a batch, so that a port
// costs ~110 KiB of receive buffers instead of BatchSize × MaxFrame (2 MiB
// with the defaults). ReadFrames then uses bufs[0] as Port says, and ends
// a batch before a frame that does not fit the next buffer: that frame
// starts the next batch, in bufs[0].
type SizedReader interface {
	// ReadsSized reports whether ReadFrames honours the buffers' lengths
	// as above. It is constant for the life of the port.
	ReadsSized() bool
}

// DirectWriter is implemented by ports that can take a frame at once,
// without waiting: a tap accepts or refuses a frame immediately, a datagram
// socket either has room for a datagram or not. When such a port's
// transmit queue is empty, the switch writes to it straight from the
// receiving goroutine, saving a copy and a goroutine hand-off per frame
// (this is what keeps an idle path's latency low); otherwise the frame is
// queued as usual.
type DirectWriter interface {
	// WriteFrameNow writes the frame buf[offset:] if it can do so without
	// waiting or retrying, under the rules of Port.WriteFrames. It returns
	// true when it is done with the frame (written, or failed with err),
	// and false with a nil error, having written nothing, when the port
	// would have to wait: the switch then queues the frame. The switch
	// never calls it concurrently with WriteFrames or with itself.
	WriteFrameNow(buf []byte, offset int) (done bool, err error)
}

// OffloadPort is implemented by ports that carry TCP segmentation and
// checksum offloads, as a Linux tap opened with IFF_VNET_HDR does: every
// frame they read or write is preceded by a virtio-net header
// (offload.Hdr, offload.HdrLen bytes) in bufs[i][offset-offload.HdrLen:
// offset], inside the headroom. Frames from such a port may be TCP
// super-frames of up to 64 KiB (GSO) or carry a partial checksum.
//
// The switch passes super-frames whole to other offload ports, with their
// header, and segments them (completing checksums) for every other port.
// A frame with a partial checksum goes to one offload port as it is; when
// it goes to any other port, or is flooded, the switch completes the
// checksum. Consecutive TCP segments of one flow in a batch read from any
// port go to an offload port as one super-frame (see
// offload.TCPCoalescer). Frames written to an offload port always have a
// valid header: zero for an ordinary frame.
type OffloadPort interface {
	// Offload reports whether the port uses the header. It is constant
	// for the life of the port.
	Offload() bool
}

// UDPSegmentPort is implemented by offload ports that may also be written
// UDP segmentation super-frames (offload.GSOUDPL4), as a tap can on Linux
// 6.2 and later. When a batch read from a port holds consecutive UDP
// datagrams of one flow for such a port, the switch writes them to it as
// one super-frame (see offload.Coalescer), which the port's kernel splits
// again where the datagrams are delivered.
type UDPSegmentPort interface {
	// AcceptsUDPSegments reports whether the port takes UDP super-frames.
	// It is constant for the life of the port and only counts when
	// Offload is true.
	AcceptsUDPSegments() bool
}

// Prober is implemented by ports that can be gone without the switch
// knowing until it sends to them (a datagram peer whose socket closed).
// When a LockMAC port is refused an address because it is reserved for
// such a port, silent for longer than the FDB keeps addresses, the switch
// asks it to Probe: a port that finds itself gone removes itself (closes
// its Attachment), which frees the address, as for a VM restarted with a
// new socket. Probe is called at most once a second per port, without the
// switch's locks held, from the receive path of the refused port; it must
// not send anything to the port's peer.
type Prober interface {
	Probe()
}

// BackendCounter is implemented by ports that count trouble of their own,
// which the switch never sees: a stream connection's write timeouts, the
// frames vmnet dropped. The switch shows the counts in PortStats.Backend.
type BackendCounter interface {
	// BackendCounters returns the port's own counters by name
	// (snake_case). It may be called at any time, also after Close.
	BackendCounters() map[string]uint64
}

// Poller is implemented by ports that can be read without waiting, as a
// tap can. The switch reads such a port under a per-port lock, from its
// own receive goroutine and, right after it wrote a frame into the port
// directly, from the goroutine that wrote it: the answer to a frame is
// often waiting before the write returns (a write into a tap runs the
// receiving namespace's network stack, which queues its reply at once),
// and taking it there saves a wakeup and a goroutine hand-off per round
// trip. Frames of one port are read and forwarded in order either way.
type Poller interface {
	// PollFrames reads up to len(bufs) frames that are already waiting,
	// under the rules of ReadFrames, but never waits: it returns (0, nil)
	// when there are none. It is called by one goroutine at a time.
	PollFrames(bufs [][]byte, sizes []int, offset int) (int, error)
	// WaitFrames calls ready whenever frames may be waiting, waiting in
	// between, until ready returns true or the port fails (then it returns
	// the error, under the rules of ReadFrames). ready must poll until
	// PollFrames finds nothing before it returns false: the port wakes it
	// again only for frames that arrive after that.
	WaitFrames(ready func() bool) error
}
