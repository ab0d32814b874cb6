package vmnet

import "sync/atomic"

// This file is the batch bookkeeping of the vmnet port: how many packets
// one vmnet_read or vmnet_write carries, and the copies between vmnet's
// buffers and the switch's. It is plain Go so that it is tested on Linux.
//
// The frames are copied rather than handed to vmnet in place: vmnet wants
// an array of vmpktdesc whose iovecs point at the data, and cgo forbids C
// memory that holds Go pointers (short of pinning every buffer on every
// call). One copy of a frame costs less than the vmnet call that carries it.

const (
	// defaultBatch is the batch size when vmnet does not report its limits
	// (vmnet_read_max_packets_key and vmnet_write_max_packets_key are
	// macOS 15+): socket_vmnet reads 32 packets at a time
	// (MAX_PACKET_COUNT_AT_ONCE) on every macOS it supports.
	defaultBatch = 32
	// maxBatch bounds the batch whatever vmnet reports: the switch gives a
	// port BatchSize receive buffers of 64 KiB each.
	maxBatch = 64
	// ethHeaderLen is the shortest frame accepted from the host.
	ethHeaderLen = 14
)

// batchSize returns the port's batch size given the packet limits vmnet
// reported for a read and for a write (0: not reported).
func batchSize(readMax, writeMax uint64) int {
	n := uint64(defaultBatch)
	if readMax > 0 || writeMax > 0 {
		n = maxBatch
		if readMax > 0 {
			n = min(n, readMax)
		}
		if writeMax > 0 {
			n = min(n, writeMax)
		}
	}
	return int(max(1, min(n, maxBatch)))
}

// counters are the per-frame troubles of a port, read by
// Interface.BackendCounters.
type counters struct {
	bufferExhausted atomic.Uint64
	tooLong         atomic.Uint64
	tooShort        atomic.Uint64
}

func (c *counters) snapshot() Counters {
	return Counters{
		BufferExhausted: c.bufferExhausted.Load(),
		TooLong:         c.tooLong.Load(),
		TooShort:        c.tooShort.Load(),
	}
}

// deliver copies the frames vmnet read, src[i][:srcSizes[i]] for i < n,
// into the caller's buffers bufs[j][offset:], recording their lengths in
// sizes[j], and returns how many it delivered. A frame shorter than an
// Ethernet header, or longer than its vmnet buffer (vmnet truncated it) or
// the caller's, is dropped and counted; the frames after it move up.
func deliver(bufs [][]byte, sizes []int, offset int, src [][]byte, srcSizes []uint64, n int, c *counters) int {
	j := 0
	for i := range n {
		sz := srcSizes[i]
		switch {
		case sz < ethHeaderLen:
			c.tooShort.Add(1)
		case sz > uint64(len(src[i])) || sz > uint64(len(bufs[j])-offset):
			c.tooLong.Add(1)
		default:
			sizes[j] = copy(bufs[j][offset:], src[i][:sz])
			j++
		}
	}
	return j
}

// stage copies the frames bufs[i][offset:] into vmnet's write buffers,
// dst[k] with its length in dstSizes[k] and i in from[k], and returns how
// many it staged. A frame longer than maxPacket (vmnet_max_packet_size_key)
// or than its buffer is dropped and counted instead, so that the frames
// after it still go out. len(dst) and len(from) must be at least len(bufs).
func stage(dst [][]byte, dstSizes []uint64, from []int, bufs [][]byte, offset, maxPacket int, c *counters) int {
	k := 0
	for i, b := range bufs {
		f := b[offset:]
		if len(f) > maxPacket || len(f) > len(dst[k]) {
			c.tooLong.Add(1)
			continue
		}
		dstSizes[k] = uint64(copy(dst[k], f))
		from[k] = i
		k++
	}
	return k
}
