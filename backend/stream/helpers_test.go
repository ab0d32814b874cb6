package stream

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// frame builds an Ethernet frame with the local experimental EtherType.
func frame(dst, src vswitch.MAC, payload []byte) []byte {
	b := make([]byte, 14+len(payload))
	copy(b, dst[:])
	copy(b[6:], src[:])
	binary.BigEndian.PutUint16(b[12:], 0x88b5)
	copy(b[14:], payload)
	return b
}

// client is a Go stand-in for a QEMU speaking the stream framing.
type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialClient(t *testing.T, network, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, addr, err)
	}
	cl := &client{t: t, c: c, r: bufio.NewReader(c)}
	t.Cleanup(func() { c.Close() })
	return cl
}

func (c *client) send(fr []byte) {
	c.t.Helper()
	b := make([]byte, 4+len(fr))
	binary.BigEndian.PutUint32(b, uint32(len(fr)))
	copy(b[4:], fr)
	c.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.c.Write(b); err != nil {
		c.t.Fatalf("client send: %v", err)
	}
}

func (c *client) recv(timeout time.Duration) ([]byte, error) {
	c.c.SetReadDeadline(time.Now().Add(timeout))
	var hdr [4]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 14 || n > 65535 {
		return nil, fmt.Errorf("bad length %d from switch", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		return nil, err
	}
	return b, nil
}

func (c *client) expect(want []byte) {
	c.t.Helper()
	got, err := c.recv(5 * time.Second)
	if err != nil {
		c.t.Fatalf("client recv: %v", err)
	}
	if !bytes.Equal(got, want) {
		c.t.Fatalf("client got frame % x..., want % x...", got[:min(len(got), 20)], want[:min(len(want), 20)])
	}
}

// expectHangup waits for the switch to close the connection.
func (c *client) expectHangup() {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c.r)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		c.t.Fatalf("waiting for the switch to hang up: %v", err)
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

func streamPorts(sw *vswitch.Switch) int {
	n := 0
	for _, a := range sw.Ports() {
		if a.Stats().Kind == PortKind {
			n++
		}
	}
	return n
}

// hooks collects log entries for assertions.
type hooks struct {
	mu      sync.Mutex
	entries []*logrus.Entry
}

func (h *hooks) Levels() []logrus.Level { return logrus.AllLevels }
func (h *hooks) Fire(e *logrus.Entry) error {
	h.mu.Lock()
	h.entries = append(h.entries, e)
	h.mu.Unlock()
	return nil
}
func (h *hooks) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, e := range h.entries {
		if e.Message == msg {
			n++
		}
	}
	return n
}

func testLogger(t *testing.T) (*logrus.Logger, *hooks) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	if testing.Verbose() {
		l.SetOutput(os.Stderr)
	}
	l.SetLevel(logrus.DebugLevel)
	h := &hooks{}
	l.AddHook(h)
	return l, h
}

// setup starts a switch and a listener on a unix socket in a temp dir.
func setup(t *testing.T, cfg ListenerConfig) (*vswitch.Switch, *Listener, string) {
	t.Helper()
	log, _ := testLogger(t)
	sw := vswitch.New(vswitch.Config{Logger: log})
	path := filepath.Join(porttest.SocketDir(t), "ts.sock")
	if cfg.Logger == nil {
		cfg.Logger = log
	}
	l, err := Listen(context.Background(), "unix://"+path, cfg, sw)
	if err != nil {
		sw.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.Close()
		sw.Close()
	})
	return sw, l, path
}

// setupPair is setup with two unix clients that have exchanged frames
// tagged tag (exchange), so that the switch knows MAC(1) at a and MAC(2)
// at b.
func setupPair(t *testing.T, tag string) (sw *vswitch.Switch, l *Listener, path string, a, b *client) {
	t.Helper()
	sw, l, path = setup(t, ListenerConfig{})
	a = dialClient(t, "unix", path)
	b = dialClient(t, "unix", path)
	porttest.WaitFor(t, "two ports", func() bool { return streamPorts(sw) == 2 })
	exchange(t, a, b, porttest.MAC(1), porttest.MAC(2), tag)
	return sw, l, path, a, b
}

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }
