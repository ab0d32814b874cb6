package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/tapswitch/tapswitch/backend/listen"
	"github.com/tapswitch/tapswitch/backend/stream"
	"github.com/tapswitch/tapswitch/internal/api"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

// dials runs the switch's dialling of QEMU stream servers. Each --connect
// URL is dialled under its own context, so that a reload that drops the
// URL can end it; so is each URL of ctl attach --connect (kept by port
// name, which reloads leave alone), so that ctl detach can end one that
// never connected.
type dials struct {
	ctx context.Context // the switch's: its end ends every dialling
	g   *errgroup.Group
	sw  *vswitch.Switch
	cfg stream.DialConfig

	mu     sync.Mutex
	config map[string]*dialState // the --connect URLs, by URL
	ctl    map[string]*dialState // ctl attach --connect's, by port name
}

func newDials(ctx context.Context, g *errgroup.Group, sw *vswitch.Switch, cfg stream.DialConfig) *dials {
	return &dials{ctx: ctx, g: g, sw: sw, cfg: cfg, config: map[string]*dialState{}, ctl: map[string]*dialState{}}
}

// connect dials the --connect URL u (again); the caller holds d.mu.
func (d *dials) connect(u string) {
	if old := d.config[u]; old != nil {
		old.cancel()
	}
	ctx, cancel := context.WithCancel(d.ctx)
	ds := newDialState(u, "connect", cancel)
	d.config[u] = ds
	d.g.Go(func() error {
		defer close(ds.done)
		return stream.Dial(ctx, u, ds.config(d.cfg), d.sw)
	})
}

// connectAll dials the configuration's --connect URLs.
func (d *dials) connectAll(urls []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, u := range urls {
		d.connect(u)
	}
}

// find returns the live dialling of the port named key ("unix:PATH",
// "tcp:HOST:PORT"), from --connect or ctl attach, and the map and key it
// is under; the caller holds d.mu.
func (d *dials) find(key string) (*dialState, map[string]*dialState, string) {
	if ds := d.ctl[key]; ds != nil && !ds.ended() {
		return ds, d.ctl, key
	}
	for u, ds := range d.config {
		if a, err := listen.Parse(u); err == nil && a.PortName() == key && !ds.ended() {
			return ds, d.config, u
		}
	}
	return nil, nil, ""
}

// list returns the live dialling, ordered by URL (GET /v1/dials).
func (d *dials) list() []api.Dial {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := []api.Dial{}
	for _, m := range []map[string]*dialState{d.config, d.ctl} {
		for _, ds := range m {
			if !ds.ended() {
				out = append(out, ds.info())
			}
		}
	}
	slices.SortFunc(out, func(a, b api.Dial) int { return strings.Compare(a.URL, b.URL) })
	return out
}

// attach starts dialling url, at a, for ctl attach --connect, unless it is
// connected or being dialled already.
func (d *dials) attach(url string, a listen.Addr) error {
	key := a.PortName()
	d.mu.Lock()
	defer d.mu.Unlock()
	if ds, _, _ := d.find(key); ds != nil || slices.ContainsFunc(d.sw.Ports(), func(p *vswitch.Attachment) bool { return p.Name() == key }) {
		return fmt.Errorf("%w: %s is connected or being dialled already (tapswitch ctl detach %s ends it)", api.ErrConflict, key, key)
	}
	ctx, cancel := context.WithCancel(d.ctx)
	ds := newDialState(url, "attach", cancel)
	d.ctl[key] = ds
	d.g.Go(func() error {
		defer func() {
			cancel()
			d.mu.Lock()
			if d.ctl[key] == ds {
				delete(d.ctl, key)
			}
			d.mu.Unlock()
			close(ds.done)
		}()
		return stream.Dial(ctx, url, ds.config(d.cfg), d.sw)
	})
	return nil
}

// stop ends the dialling of the port named name, or of the URL name, and
// returns its port name; "" if there is none (api.Server.StopDial).
func (d *dials) stop(name string) string {
	key := name
	if a, err := listen.Parse(name); err == nil {
		key = a.PortName()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ds, m, k := d.find(key)
	if ds == nil {
		return ""
	}
	ds.cancel()
	delete(m, k)
	return key
}

// reload makes the --connect URLs dialled those of a reloaded
// configuration, connects: it dials the new ones, and again those whose
// port was detached since (tapswitch ctl detach) unless ctl attach has
// connected them or is dialling them (attached holds the port names in
// use); it ends those no longer listed.
func (d *dials) reload(connects []string, attached map[string]bool, log logrus.FieldLogger) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, u := range connects {
		if ds := d.config[u]; ds == nil || ds.ended() {
			// Connected or being dialled already by tapswitch ctl attach
			// --connect: a second connection to the same QEMU would be a
			// second port.
			if a, err := listen.Parse(u); err == nil {
				key := a.PortName()
				if ds := d.ctl[key]; attached[key] || ds != nil && !ds.ended() {
					log.WithField("connect", u).Info("SIGHUP: already connected or being dialled (ctl attach); not dialled again")
					continue
				}
			}
			d.connect(u)
			log.WithField("connect", u).Info("SIGHUP: connecting")
		}
	}
	for u, ds := range d.config {
		if !slices.Contains(connects, u) {
			ds.cancel() // closes the port if connected, and dials no more
			delete(d.config, u)
			log.WithField("connect", u).Info("SIGHUP: disconnected; no longer dialled")
		}
	}
}

// dialState is a URL's dialling: cancel ends it; done is closed once it
// has ended, by cancel or because its port was detached.
type dialState struct {
	url    string
	origin string // api.Dial's Origin
	cancel context.CancelFunc
	done   chan struct{}
	status stream.DialStatus
}

func newDialState(url, origin string, cancel context.CancelFunc) *dialState {
	return &dialState{url: url, origin: origin, cancel: cancel, done: make(chan struct{})}
}

// config returns the dial configuration c, reporting to d.
func (d *dialState) config(c stream.DialConfig) stream.DialConfig {
	c.Status = &d.status
	return c
}

func (d *dialState) info() api.Dial {
	port := d.url
	if a, err := listen.Parse(d.url); err == nil {
		port = a.PortName()
	}
	return api.Dial{URL: d.url, Port: port, Origin: d.origin, DialInfo: d.status.Get()}
}

func (d *dialState) ended() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}
