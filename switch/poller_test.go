package vswitch_test

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// echoPort behaves like a tap whose far side answers at once: a frame
// written into it whose payload starts with "req" puts an answer ("ans"
// and the same sequence number, to the sender) in its receive queue before
// the write returns, as a namespace's stack does inside a write into a tap.
// It is a DirectWriter and a Poller. With lazy, its own receive loop is
// never told about an answer, so that every answer forwarded was taken by
// the goroutine that wrote the request.
type echoPort struct {
	mac  vswitch.MAC
	lazy bool

	mu      sync.Mutex
	pending [][]byte
	notify  chan struct{}
	closed  chan struct{}
	once    sync.Once

	polls    atomic.Int64 // PollFrames calls that found nothing
	requests atomic.Int64
	waiting  atomic.Bool // the port's own loop waits for a notification
}

var (
	_ vswitch.Poller       = (*echoPort)(nil)
	_ vswitch.DirectWriter = (*echoPort)(nil)
)

func newEchoPort(mac vswitch.MAC, lazy bool) *echoPort {
	return &echoPort{mac: mac, lazy: lazy, notify: make(chan struct{}, 1), closed: make(chan struct{})}
}

func (p *echoPort) wake() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

func (p *echoPort) WriteFrameNow(b []byte, offset int) (bool, error) {
	select {
	case <-p.closed:
		return true, net.ErrClosed
	default:
	}
	f := b[offset:]
	if len(f) < 18 || string(f[14:17]) != "req" {
		return true, nil
	}
	p.requests.Add(1)
	ans := porttest.Frame(vswitch.MAC(f[6:12]), p.mac, 0x88b5, append([]byte("ans"), f[17:21]...))
	p.put(ans)
	if !p.lazy {
		p.wake()
	}
	return true, nil
}

// put makes f wait in the port's receive queue, without telling its loop.
func (p *echoPort) put(f []byte) {
	p.mu.Lock()
	p.pending = append(p.pending, f)
	p.mu.Unlock()
}

func (p *echoPort) WriteFrames(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		if _, err := p.WriteFrameNow(b, offset); err != nil {
			return i, err
		}
	}
	return len(bufs), nil
}

func (p *echoPort) PollFrames(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-p.closed:
		return 0, net.ErrClosed
	default:
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for n < len(bufs) && len(p.pending) > 0 {
		sizes[n] = copy(bufs[n][offset:], p.pending[0])
		p.pending = p.pending[1:]
		n++
	}
	if n == 0 {
		p.polls.Add(1)
	}
	return n, nil
}

func (p *echoPort) WaitFrames(ready func() bool) error {
	for !ready() {
		p.waiting.Store(true)
		select {
		case <-p.notify:
		case <-p.closed:
			return net.ErrClosed
		}
		p.waiting.Store(false)
	}
	return nil
}

func (p *echoPort) ReadFrames([][]byte, []int, int) (int, error) {
	panic("the switch reads a Poller with PollFrames")
}

func (p *echoPort) BatchSize() int { return 4 }
func (p *echoPort) MTU() int       { return 1500 }
func (p *echoPort) String() string { return "echo" }
func (p *echoPort) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

func request(dst, src vswitch.MAC, seq uint32) []byte {
	return porttest.Frame(dst, src, 0x88b5, binary.BigEndian.AppendUint32([]byte("req"), seq))
}

// setupEcho starts a switch with cfg and attaches an ordinary in-memory
// port (station 1) and an echoPort (station 2), and lets the switch learn
// both.
func setupEcho(t *testing.T, lazy bool, cfg vswitch.Config) (*vswitch.Switch, *porttest.Port, *echoPort, *vswitch.Attachment) {
	t.Helper()
	// Queues long enough for every frame of the tests: a drop for a full
	// queue would read as a lost answer.
	cfg.QueueLen, cfg.QueueBytes = 8192, 64<<20
	sw := vswitch.New(cfg)
	t.Cleanup(func() { sw.Close() })
	a := porttest.New(porttest.Config{Name: "a", OutLen: 8192})
	if _, err := sw.AddPort(a, vswitch.PortConfig{}); err != nil {
		t.Fatal(err)
	}
	e := newEchoPort(porttest.MAC(2), lazy)
	ea, err := sw.AddPort(e, vswitch.PortConfig{})
	if err != nil {
		t.Fatal(err)
	}
	// Teach the switch where station 2 is: an answer to a broadcast.
	if err := a.Send(porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x88b5, []byte("hello"))); err != nil {
		t.Fatal(err)
	}
	e.put(porttest.Frame(porttest.MAC(1), porttest.MAC(2), 0x88b5, []byte("hi")))
	e.wake()
	if _, ok := a.Recv(wait); !ok {
		t.Fatal("station 2's first frame did not reach station 1")
	}
	porttest.WaitFor(t, "station 2 learned", func() bool { return len(sw.FDB()) == 2 })
	// From here on the echo port's own loop reads only when notified.
	porttest.WaitFor(t, "the echo port's loop idle", func() bool { return e.waiting.Load() && len(e.notify) == 0 })
	return sw, a, e, ea
}

// recvAnswers reads n answers on p and checks their sequence numbers are
// 0..n-1 in order.
func recvAnswers(t *testing.T, p *porttest.Port, n int) {
	t.Helper()
	for i := range n {
		recvAnswer(t, p, i)
	}
}

func TestPollerAnswerTakenByWriter(t *testing.T) {
	sw, a, _, ea := setupEcho(t, true, vswitch.Config{})
	const n = 50
	for i := range n {
		if err := a.Send(request(porttest.MAC(2), porttest.MAC(1), uint32(i))); err != nil {
			t.Fatal(err)
		}
		// The echo port's own loop never hears of the answer: only the
		// goroutine that wrote the request can have forwarded it.
		recvAnswer(t, a, i)
	}
	if got := ea.Stats().RxAnswers; got != n {
		t.Errorf("RxAnswers = %d, want %d", got, n)
	}
	if got := sw.Stats().Ports[1].RxFrames; got != n+1 {
		t.Errorf("echo port RxFrames = %d, want %d", got, n+1)
	}
}

// recvAnswer reads the answer with sequence number i.
func recvAnswer(t *testing.T, p *porttest.Port, i int) {
	t.Helper()
	f, ok := p.Recv(wait)
	if !ok {
		t.Fatalf("answer %d missing", i)
	}
	if got := binary.BigEndian.Uint32(f[17:21]); string(f[14:17]) != "ans" || got != uint32(i) {
		t.Fatalf("answer %d: got %q seq %d", i, f[14:17], got)
	}
}

// Answers are forwarded in order while the port's own loop and the
// writers' polls compete for them.
func TestPollerOrder(t *testing.T) {
	_, a, e, ea := setupEcho(t, false, vswitch.Config{})
	const n = 3000
	go func() {
		for i := range n {
			if a.Send(request(porttest.MAC(2), porttest.MAC(1), uint32(i))) != nil {
				return
			}
		}
	}()
	recvAnswers(t, a, n)
	if got := e.requests.Load(); got != n {
		t.Errorf("echo port saw %d requests, want %d", got, n)
	}
	t.Logf("%d of %d answers taken by the writer", ea.Stats().RxAnswers, n)
}

// A port that never answers is polled rarely: after k misses in a row the
// next 2^k-1 writes skip the poll.
func TestPollerBackoff(t *testing.T) {
	sw, a, e, ea := setupEcho(t, false, vswitch.Config{})
	const n = 5000
	before := e.polls.Load()
	for range n {
		if err := a.Send(porttest.Frame(porttest.MAC(2), porttest.MAC(1), 0x88b5, []byte("one way"))); err != nil {
			t.Fatal(err)
		}
	}
	// The echo port also had setupEcho's broadcast.
	porttest.WaitFor(t, "all frames forwarded", func() bool { return ea.Stats().TxFrames >= n+1 })
	// The echo port's own loop polls once at start and after each
	// notification (none here); the writer's polls back off.
	if misses := e.polls.Load() - before; misses > 30 {
		t.Errorf("%d empty polls for %d one-way frames, want at most 30", misses, n)
	}
	if st := sw.Stats(); st.Forwarded < n {
		t.Errorf("forwarded %d, want >= %d", st.Forwarded, n)
	}
}
