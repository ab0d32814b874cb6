//go:build darwin && cgo

package vmnet

/*
#cgo CFLAGS: -mmacosx-version-min=12
#cgo LDFLAGS: -framework vmnet
#include <stdlib.h>
#include "vmnet_darwin.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/tapswitch/tapswitch/internal/logx"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

// exhaustedPause is how long a reader waits before reading again when
// vmnet reports its buffers exhausted: events may not come again until the
// pending packets are read.
const exhaustedPause = 200 * time.Microsecond

// Open starts a vmnet.framework interface as cfg describes. It needs root
// or the com.apple.vm.networking entitlement; without them it fails with
// an error matching fs.ErrPermission.
func Open(cfg Config) (*Interface, error) {
	name := darwinName(cfg)
	params, err := darwinParams(cfg)
	if err != nil {
		return nil, err
	}
	log := logx.OrDiscard(cfg.Logger)

	desc := C.tsvmnet_desc_new()
	defer C.tsvmnet_desc_free(desc)
	for _, p := range params {
		if err := setParam(desc, p); err != nil {
			return nil, fmt.Errorf("host interface %s: %w", name, err)
		}
	}

	// The wake pipe carries vmnet's packets-available events to the
	// reader; its read end is on the Go poller, so Close wakes the reader.
	// macOS has no pipe2: hold ForkLock, as package os does, so that no
	// child started meanwhile inherits the pipe.
	var fds [2]int
	syscall.ForkLock.RLock()
	err = unix.Pipe(fds[:])
	if err == nil {
		unix.CloseOnExec(fds[0])
		unix.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("host interface %s: pipe: %w", name, err)
	}
	for _, fd := range fds {
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fds[0])
			unix.Close(fds[1])
			return nil, fmt.Errorf("host interface %s: pipe: %w", name, err)
		}
	}

	var info C.struct_tsvmnet_info
	var h *C.struct_tsvmnet
	if st := uint32(C.tsvmnet_start(desc, C.int(fds[1]), &info, &h)); st != statusSuccess {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, vmnetError(name, "vmnet_start_interface", st)
	}

	mtu := int(info.mtu)
	if mtu == 0 {
		mtu = 1500
	}
	pkt := int(info.max_packet_size)
	if pkt == 0 {
		pkt = mtu + ethHeaderLen
	}
	p := &port{
		name:      name,
		h:         h,
		wake:      os.NewFile(uintptr(fds[0]), name+"-wake"),
		wakeW:     fds[1],
		batch:     batchSize(uint64(info.read_max_packets), uint64(info.write_max_packets)),
		mtu:       mtu,
		maxPacket: pkt,
	}
	var bufs C.struct_tsvmnet_bufs
	if C.tsvmnet_alloc(h, C.int(p.batch), C.size_t(pkt), &bufs) != 0 {
		p.Close()
		return nil, fmt.Errorf("host interface %s: allocate %d packet buffers of %d bytes: out of memory", name, 2*p.batch, pkt)
	}
	p.rbufs, p.rsizes = cBuffers(bufs.rmem, bufs.rsizes, p.batch, pkt)
	p.wbufs, p.wsizes = cBuffers(bufs.wmem, bufs.wsizes, p.batch, pkt)
	p.wfrom = make([]int, p.batch)

	macText := C.GoString(&info.mac[0])
	mac, err := parseMAC(macText)
	if err != nil && macText != "" {
		log.WithField("port", name).WithError(err).Warn("vmnet reported an unreadable MAC address")
	}
	var id UUID
	copy(id[:], C.GoBytes(unsafe.Pointer(&info.interface_id[0]), C.int(len(id))))
	fields := logrus.Fields{
		"port": name, "mode": Mode(params[0].Uint).String(), "mac": macText, "mtu": mtu,
		"max_packet_size": pkt, "batch": p.batch, "interface_id": id.String(),
	}
	for k, v := range map[string]*C.char{
		"start_address": &info.start_address[0], "end_address": &info.end_address[0], "subnet_mask": &info.subnet_mask[0],
	} {
		if s := C.GoString(v); s != "" {
			fields[k] = s
		}
	}
	log.WithFields(fields).Info("host interface up")
	return &Interface{port: p, name: name, mac: mac, close: p.Close, counters: p.c.snapshot}, nil
}

// setParam puts p into the interface description.
func setParam(desc unsafe.Pointer, p param) error {
	key := C.CString(p.Key)
	defer C.free(unsafe.Pointer(key))
	var rc C.int
	switch p.Kind {
	case kindUint64:
		rc = C.tsvmnet_desc_set_uint64(desc, key, C.uint64_t(p.Uint))
	case kindString:
		v := C.CString(p.Str)
		defer C.free(unsafe.Pointer(v))
		rc = C.tsvmnet_desc_set_string(desc, key, v)
	case kindUUID:
		id := p.UUID
		rc = C.tsvmnet_desc_set_uuid(desc, key, (*C.uint8_t)(unsafe.Pointer(&id[0])))
	default:
		return fmt.Errorf("parameter %s: unknown kind %d", p.Key, p.Kind)
	}
	if rc != 0 {
		return fmt.Errorf("parameter %v: this macOS's vmnet.framework has no %s", p, p.Key)
	}
	return nil
}

// cBuffers views n C buffers of size bytes, laid end to end from mem, and
// n lengths from sizes, as Go slices. The memory is C's: the slices stay
// valid until tsvmnet_free.
func cBuffers(mem *C.uint8_t, sizes *C.uint64_t, n, size int) ([][]byte, []uint64) {
	all := unsafe.Slice((*byte)(unsafe.Pointer(mem)), n*size)
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = all[i*size : (i+1)*size : (i+1)*size]
	}
	return bufs, unsafe.Slice((*uint64)(unsafe.Pointer(sizes)), n)
}

// port is the vmnet interface as a vswitch.Port. Reads and writes each
// have their own C buffers and lock, so they run concurrently; Close takes
// both locks before it stops the interface and frees the buffers.
type port struct {
	name      string
	h         *C.struct_tsvmnet
	wake      *os.File // read end of the wake pipe
	wakeW     int      // write end, written by the C event callback
	batch     int
	mtu       int
	maxPacket int
	c         counters

	rmu     sync.Mutex
	rbufs   [][]byte
	rsizes  []uint64
	wakeBuf [64]byte

	wmu    sync.Mutex
	wbufs  [][]byte
	wsizes []uint64
	wfrom  []int // the index in WriteFrames' chunk of each staged frame

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ vswitch.Port = (*port)(nil)

func (p *port) String() string { return p.name }
func (p *port) MTU() int       { return p.mtu }
func (p *port) BatchSize() int { return p.batch }

// ReadFrames reads the frames the host sent, as vswitch.Port.ReadFrames:
// it reads what vmnet holds and, when vmnet holds nothing, waits for its
// packets-available event.
func (p *port) ReadFrames(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := min(len(bufs), p.batch)
	if n == 0 {
		return 0, nil
	}
	p.rmu.Lock()
	defer p.rmu.Unlock()
	for {
		if p.closed.Load() {
			return 0, fmt.Errorf("host interface %s: read: %w", p.name, net.ErrClosed)
		}
		var got C.int
		switch st := uint32(C.tsvmnet_read(p.h, C.int(n), &got)); st {
		case statusSuccess:
			if k := deliver(bufs, sizes, offset, p.rbufs, p.rsizes, int(got), &p.c); k > 0 {
				return k, nil
			}
			if got > 0 {
				continue // every frame was dropped: there may be more
			}
		case statusBufferExhausted:
			p.c.bufferExhausted.Add(1)
			time.Sleep(exhaustedPause)
			continue
		default:
			return 0, vmnetError(p.name, "vmnet_read", st)
		}
		// vmnet is empty. A byte written since the last drain, even one
		// for packets already read, only makes this loop read once more.
		if _, err := p.wake.Read(p.wakeBuf[:]); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return 0, fmt.Errorf("host interface %s: read: %w", p.name, net.ErrClosed)
			}
			return 0, fmt.Errorf("host interface %s: wait for packets: %w", p.name, err)
		}
	}
}

// WriteFrames delivers frames to the host, as vswitch.Port.WriteFrames,
// in batches of BatchSize. A frame vmnet cannot carry (longer than its
// maximum packet size) is dropped and counted in Counters.TooLong, and
// reported as written, so that the frames after it still go out. When
// vmnet's buffers are full, WriteFrames stops and returns the number
// written before with an error matching ErrBufferExhausted; the port stays
// up.
func (p *port) WriteFrames(bufs [][]byte, offset int) (int, error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	done := 0
	for done < len(bufs) {
		if p.closed.Load() {
			return done, fmt.Errorf("host interface %s: write: %w", p.name, net.ErrClosed)
		}
		chunk := bufs[done:min(len(bufs), done+p.batch)]
		// Frames that stage dropped count as written: the result is the
		// chunk index of the first staged frame vmnet did not take.
		if k := stage(p.wbufs, p.wsizes, p.wfrom, chunk, offset, p.maxPacket, &p.c); k > 0 {
			var wrote C.int
			switch st := uint32(C.tsvmnet_write(p.h, C.int(k), &wrote)); st {
			case statusSuccess:
				if w := max(int(wrote), 0); w < k {
					p.c.bufferExhausted.Add(uint64(k - w))
					return done + p.wfrom[w], fmt.Errorf("host interface %s: write: %w (%d of %d frames taken)",
						p.name, ErrBufferExhausted, w, k)
				}
			case statusBufferExhausted:
				p.c.bufferExhausted.Add(uint64(k))
				return done + p.wfrom[0], vmnetError(p.name, "vmnet_write", st)
			default:
				return done + p.wfrom[0], vmnetError(p.name, "vmnet_write", st)
			}
		}
		done += len(chunk)
	}
	return done, nil
}

// Close stops the interface (vmnet_stop_interface), as
// vswitch.Port.Close.
func (p *port) Close() error {
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		p.wake.Close() // wakes a reader waiting for packets
		p.rmu.Lock()
		p.wmu.Lock()
		defer p.wmu.Unlock()
		defer p.rmu.Unlock()
		if st := uint32(C.tsvmnet_stop(p.h)); st != statusSuccess {
			p.closeErr = vmnetError(p.name, "vmnet_stop_interface", st)
		}
		C.tsvmnet_free(p.h)
		p.h = nil
		p.rbufs, p.wbufs, p.rsizes, p.wsizes = nil, nil, nil, nil
		unix.Close(p.wakeW) // no callback can write it any more
	})
	return p.closeErr
}
