package loadgen

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
)

// Relay is the least a user-space switch between two clients must do, for
// a baseline: it listens like the switch and passes everything from one of
// its first two clients to the other, without parsing, learning or
// queueing. Stream: two byte copies (io.Copy, one goroutine per
// direction). Dgram: one goroutine reading every datagram and sending it
// to the other peer, one system call each way per frame. The switch's
// datagram listener batches instead (recvmmsg and sendmmsg on Linux, up
// to 32 datagrams a call), so it can pass this relay: the Dgram relay is
// the cost of a frame through two system calls, not a ceiling. The gap
// between a Session's result against a stream Relay and against a Switch
// is the cost of the switch itself.
type Relay struct {
	// Path is the socket file to give Config.Path.
	Path string

	ln   net.Listener  // stream
	pc   *net.UnixConn // dgram
	mu   sync.Mutex
	conn []net.Conn
	wg   sync.WaitGroup
}

// StartRelay starts a relay for transport listening in dir.
func StartRelay(dir, transport string) (*Relay, error) {
	r := &Relay{Path: filepath.Join(dir, "relay-"+transport+".sock")}
	os.Remove(r.Path)
	if transport == Dgram {
		pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: r.Path, Net: "unixgram"})
		if err != nil {
			return nil, err
		}
		pc.SetReadBuffer(4 << 20)
		pc.SetWriteBuffer(1 << 20)
		r.pc = pc
		r.wg.Add(1)
		go r.dgramLoop()
		return r, nil
	}
	ln, err := net.Listen("unix", r.Path)
	if err != nil {
		return nil, err
	}
	r.ln = ln
	r.wg.Add(1)
	go r.acceptLoop()
	return r, nil
}

func (r *Relay) acceptLoop() {
	defer r.wg.Done()
	var c [2]net.Conn
	for i := range c {
		var err error
		if c[i], err = r.ln.Accept(); err != nil {
			return
		}
		r.mu.Lock()
		r.conn = append(r.conn, c[i])
		r.mu.Unlock()
	}
	for i := range c {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			io.Copy(c[i^1], c[i])
		}()
	}
}

func (r *Relay) dgramLoop() {
	defer r.wg.Done()
	buf := make([]byte, 65536)
	var peers []*net.UnixAddr
	for {
		n, from, err := r.pc.ReadFromUnix(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if from == nil {
			continue
		}
		i := -1
		for j, p := range peers {
			if p.Name == from.Name {
				i = j
			}
		}
		if i < 0 && len(peers) < 2 {
			peers = append(peers, from)
			i = len(peers) - 1
		}
		if i < 0 || len(peers) < 2 || n == 4 { // unknown, alone, or "VFKT"
			continue
		}
		r.pc.WriteToUnix(buf[:n], peers[i^1])
	}
}

// Close stops the relay.
func (r *Relay) Close() error {
	if r.pc != nil {
		r.pc.Close()
	} else {
		r.ln.Close()
		r.mu.Lock()
		for _, c := range r.conn {
			c.Close()
		}
		r.mu.Unlock()
	}
	r.wg.Wait()
	os.Remove(r.Path)
	return nil
}
