package api_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tapswitch/tapswitch/internal/api"
	"github.com/tapswitch/tapswitch/internal/pcap"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs srv on a fresh unix socket until stop (at the latest when
// the test ends); stop returns what Serve returned.
func serve(t *testing.T, srv *api.Server) (sock string, stop func() error) {
	t.Helper()
	sock = filepath.Join(porttest.SocketDir(t), "ctl.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	var once sync.Once
	var serr error
	stop = func() error {
		once.Do(func() { cancel(); serr = <-served })
		return serr
	}
	t.Cleanup(func() { stop() })
	return sock, stop
}

func TestAPI(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	p1 := porttest.New(porttest.Config{Name: "one"})
	p2 := porttest.New(porttest.Config{Name: "two"})
	a1, _ := sw.AddPort(p1, vswitch.PortConfig{Kind: "mem"})
	if _, err := sw.AddPort(p2, vswitch.PortConfig{Kind: "mem", Peer: "pid=1"}); err != nil {
		t.Fatal(err)
	}
	var attached []api.AttachRequest
	srv := &api.Server{
		Switch: sw,
		Attach: func(req api.AttachRequest) error {
			if req.Tap == "bad" {
				return errors.Join(api.ErrBadRequest, errors.New("no such thing"))
			}
			attached = append(attached, req)
			return nil
		},
	}
	sock, stop := serve(t, srv)
	defer stop()
	ctx := t.Context()
	c := api.NewClient(sock)

	f := porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x0806, nil)
	if err := p1.Send(f); err != nil {
		t.Fatal(err)
	}
	if _, ok := p2.Recv(5 * time.Second); !ok {
		t.Fatal("frame not forwarded")
	}
	// The switch counts a sent frame once the write has returned.
	porttest.WaitFor(t, "the frame counted as sent", func() bool { return sw.Stats().Totals.TxFrames == 1 })

	var ports []api.Port
	if err := c.Do(ctx, "GET", "/v1/ports", nil, &ports); err != nil {
		t.Fatal(err)
	}
	if len(ports) != 2 || ports[0].Name != "one" || len(ports[0].MACs) != 1 || ports[0].MACs[0] != porttest.MAC(1) ||
		ports[0].RxFrames != 1 || ports[1].TxFrames != 1 || ports[1].Peer != "pid=1" {
		t.Fatalf("ports: %+v", ports)
	}
	var fdb []vswitch.FDBEntry
	if err := c.Do(ctx, "GET", "/v1/fdb", nil, &fdb); err != nil || len(fdb) != 1 || fdb[0].Port != "one" {
		t.Fatalf("fdb: %+v %v", fdb, err)
	}
	var st vswitch.Stats
	if err := c.Do(ctx, "GET", "/v1/stats", nil, &st); err != nil || st.Flooded != 1 || st.FDB.Size != 1 {
		t.Fatalf("stats: %+v %v", st, err)
	}
	if err := c.Do(ctx, "GET", "/v1/leases", nil, nil); err == nil {
		t.Fatal("leases without DHCP: no error")
	}
	// No Listeners function: an empty list, not null or an error.
	var ls []api.Listener
	if err := c.Do(ctx, "GET", "/v1/listeners", nil, &ls); err != nil || ls == nil || len(ls) != 0 {
		t.Fatalf("listeners without a Listeners function: %#v, %v; want an empty list", ls, err)
	}
	var ds []api.Dial
	if err := c.Do(ctx, "GET", "/v1/dials", nil, &ds); err != nil || ds == nil || len(ds) != 0 {
		t.Fatalf("dials without a Dials function: %#v, %v; want an empty list", ds, err)
	}

	// Capture one port while a frame crosses it.
	cctx, ccancel := context.WithCancel(ctx)
	rc, err := c.Capture(cctx, "two")
	if err != nil {
		t.Fatal(err)
	}
	r, err := pcap.NewReader(rc)
	if err != nil {
		t.Fatal(err)
	}
	uni := porttest.Frame(porttest.MAC(9), porttest.MAC(1), 0x0800, []byte("captured"))
	if err := p1.Send(uni); err != nil {
		t.Fatal(err)
	}
	rec, err := r.Next(nil)
	if err != nil || string(rec[16:]) != string(uni) {
		t.Fatalf("captured %x, %v", rec, err)
	}
	ccancel()
	rc.Close()

	var fl api.FlushResult
	if err := c.Do(ctx, "POST", "/v1/fdb/flush", nil, &fl); err != nil || fl.Flushed != 1 {
		t.Fatalf("flush: %+v %v", fl, err)
	}
	if err := c.Do(ctx, "POST", "/v1/ports", api.AttachRequest{Tap: "tap9"}, nil); err != nil || len(attached) != 1 {
		t.Fatalf("attach: %v %v", attached, err)
	}
	if err := c.Do(ctx, "POST", "/v1/ports", api.AttachRequest{Tap: "bad"}, nil); err == nil {
		t.Fatal("attach of a bad tap succeeded")
	}
	if err := c.Do(ctx, "POST", "/v1/ports", api.AttachRequest{}, nil); err == nil {
		t.Fatal("empty attach request succeeded")
	}
	if err := c.Do(ctx, "DELETE", "/v1/ports/"+strconv.Itoa(a1.ID()), nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "DELETE", "/v1/ports/nonesuch", nil, nil); err == nil {
		t.Fatal("detach of a missing port succeeded")
	}
	if n := len(sw.Ports()); n != 1 {
		t.Fatalf("%d ports after detach, want 1", n)
	}
	// Socket ports are named by their paths, slashes and all.
	const name = "unix:/run/tapswitch/vm.sock"
	if _, err := sw.AddPort(porttest.New(porttest.Config{Name: name}), vswitch.PortConfig{Kind: "stream"}); err != nil {
		t.Fatal(err)
	}
	if ps, err := c.Detach(ctx, name); err != nil || ps.Name != name {
		t.Fatalf("detach %s: %+v, %v", name, ps, err)
	}
	if n := len(sw.Ports()); n != 1 {
		t.Fatalf("%d ports after detaching %s, want 1", n, name)
	}
}
