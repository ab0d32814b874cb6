//go:build soak && linux

package tests

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tapswitch/tapswitch/backend/dgram"
	"github.com/tapswitch/tapswitch/backend/stream"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

// TestSoak runs a switch with a stream and a datagram listener for
// TAPSWITCH_SOAK (default 10m) while clients join, exchange traffic and
// leave, then checks that every client's port is gone, no goroutine is
// left, and reports frames forwarded and dropped. Run it with `make soak`
// (the race detector is on).
func TestSoak(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d, err := time.ParseDuration(cmpOr(os.Getenv("TAPSWITCH_SOAK"), "10m"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sw := vswitch.New(vswitch.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	sl, err := stream.Listen(ctx, "unix://"+filepath.Join(dir, "s.sock"), stream.ListenerConfig{}, sw)
	if err != nil {
		t.Fatal(err)
	}
	dl, err := dgram.Listen(ctx, "unixgram://"+filepath.Join(dir, "d.sock"), dgram.Config{IdleTimeout: 5 * time.Second}, sw)
	if err != nil {
		t.Fatal(err)
	}

	var sent, received, sessions atomic.Uint64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; time.Now().Before(deadline); n++ {
				var err error
				if w%2 == 0 {
					err = streamSession(sl.Addr().Address, w, &sent, &received)
				} else {
					err = dgramSession(dir, dl.Addr().Address, w, n, &sent, &received)
				}
				if err != nil {
					t.Errorf("worker %d session %d: %v", w, n, err)
					return
				}
				sessions.Add(1)
			}
		}()
	}
	for time.Now().Before(deadline) {
		time.Sleep(30 * time.Second)
		st := sw.Stats()
		t.Logf("ports %d, sessions %d, sent %d, received %d, forwarded %d, flooded %d, drops %d",
			len(st.Ports), sessions.Load(), sent.Load(), received.Load(), st.Forwarded, st.Flooded, st.Totals.Drops.Total())
	}
	wg.Wait()
	dl.Close() // peers would otherwise stay until they idle out
	time.Sleep(100 * time.Millisecond)
	st := sw.Stats()
	t.Logf("soak %v: %d sessions, %d frames sent, %d received; switch forwarded %d, flooded %d, dropped %+v",
		d, sessions.Load(), sent.Load(), received.Load(), st.Forwarded, st.Flooded, st.Totals.Drops)
	if len(st.Ports) != 0 {
		t.Errorf("%d ports left after every client left", len(st.Ports))
	}
	if received.Load() == 0 {
		t.Error("no frame was delivered")
	}
	cancel()
	sl.Close()
	sw.Close()
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// soakFrame returns a broadcast frame from station id.
func soakFrame(id int) []byte {
	f := make([]byte, 200)
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, byte(id >> 8), byte(id)})
	f[12], f[13] = 0x88, 0xb5
	rand.Read(f[14:])
	return f
}

// streamSession connects a stream client, sends a burst of frames while
// reading what comes, and leaves.
func streamSession(path string, id int, sent, received *atomic.Uint64) error {
	c, err := net.Dial("unix", path)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var hdr [4]byte
		buf := make([]byte, 65536)
		for {
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return
			}
			n := binary.BigEndian.Uint32(hdr[:])
			if _, err := io.ReadFull(c, buf[:n]); err != nil {
				return
			}
			received.Add(1)
		}
	}()
	f := soakFrame(id)
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(f)))
	msg = append(msg, f...)
	for range 2000 {
		if _, err := c.Write(msg); err != nil {
			c.Close()
			<-done
			return fmt.Errorf("write: %w", err)
		}
		sent.Add(1)
	}
	time.Sleep(50 * time.Millisecond)
	c.Close()
	<-done
	return nil
}

// dgramSession binds a unixgram client, says VFKT, sends frames, reads
// what comes for a moment, and closes its socket.
func dgramSession(dir, sw string, id, n int, sent, received *atomic.Uint64) error {
	local := filepath.Join(dir, fmt.Sprintf("c%d-%d.sock", id, n))
	c, err := net.DialUnix("unixgram", &net.UnixAddr{Name: local, Net: "unixgram"}, &net.UnixAddr{Name: sw, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer os.Remove(local)
	defer c.Close()
	if _, err := c.Write([]byte("VFKT")); err != nil {
		return err
	}
	f := soakFrame(1000 + id)
	for range 500 {
		if _, err := c.Write(f); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		sent.Add(1)
	}
	buf := make([]byte, 65536)
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	for {
		if _, err := c.Read(buf); err != nil {
			return nil
		}
		received.Add(1)
	}
}
