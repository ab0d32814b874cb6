package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tapswitch/tapswitch/backend/listen"
	"github.com/tapswitch/tapswitch/internal/logx"
	"github.com/tapswitch/tapswitch/internal/pcap"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

// Server answers the control API for one switch.
type Server struct {
	// Switch is the switch being controlled (required).
	Switch *vswitch.Switch
	// Leases returns the DHCP leases; nil when DHCP is off.
	Leases func() []Lease
	// Listeners describes the listening sockets; nil lists none.
	Listeners func() []Listener
	// Dials describes the stream servers the switch connects to; nil
	// lists none.
	Dials func() []Dial
	// Attach adds a port; nil makes POST /v1/ports answer 501.
	Attach func(req AttachRequest) error
	// StopDial, if set, is asked by DELETE /v1/ports/{id} when no port is
	// named id: it stops dialling the URL or port name id (a --connect or
	// attached URL that has not connected) and returns the port name it
	// would have had, or "" when nothing is dialled there.
	StopDial func(name string) string
	// Logger receives the end of each capture that lost frames to a slow
	// reader, and connections cut at shutdown; nil discards them.
	Logger logrus.FieldLogger

	// readTimeout bounds reading a request, body included; 0 means
	// defaultReadTimeout (tests shorten it).
	readTimeout time.Duration
	// captures counts the running captures (at most MaxCaptures).
	captures atomic.Int32
}

// MaxCaptures is how many captures may run at once; GET /v1/capture
// refuses more with 503. Each holds up to vswitch.DefaultCaptureBytes of
// frames for a slow reader.
const MaxCaptures = 16

const (
	// defaultReadTimeout bounds reading a request, so that a client that
	// sends part of one does not hold a connection and its goroutine.
	defaultReadTimeout = 10 * time.Second
	// shutdownGrace bounds how long Serve waits for requests under way
	// when ctx ends before it closes their connections.
	shutdownGrace = time.Second
	// captureEndGrace is how long a capture's writes may take once ctx
	// has ended: a reader that reads gets the stream's clean end, one that
	// has stopped reading is cut off rather than holding up the shutdown.
	captureEndGrace = 250 * time.Millisecond
)

// ErrBadRequest marks an Attach error caused by the request itself
// (answered 400).
var ErrBadRequest = errors.New("bad request")

// ErrConflict marks an Attach error for what is attached already (answered
// 409, as a tap attached twice is).
var ErrConflict = errors.New("conflict")

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ports", s.ports)
	mux.HandleFunc("POST /v1/ports", s.attach)
	mux.HandleFunc("DELETE /v1/ports/{id}", s.detach)
	mux.HandleFunc("GET /v1/fdb", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.Switch.FDB()) })
	mux.HandleFunc("POST /v1/fdb/flush", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, FlushResult{Flushed: s.Switch.FlushFDB()})
	})
	mux.HandleFunc("GET /v1/leases", func(w http.ResponseWriter, _ *http.Request) {
		if s.Leases == nil {
			writeError(w, http.StatusNotFound, "DHCP is not enabled on this switch")
			return
		}
		writeJSON(w, s.Leases())
	})
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.Switch.Stats()) })
	mux.HandleFunc("GET /v1/listeners", func(w http.ResponseWriter, _ *http.Request) {
		ls := []Listener{}
		if s.Listeners != nil {
			ls = s.Listeners()
		}
		writeJSON(w, ls)
	})
	mux.HandleFunc("GET /v1/dials", func(w http.ResponseWriter, _ *http.Request) {
		ds := []Dial{}
		if s.Dials != nil {
			ds = s.Dials()
		}
		writeJSON(w, ds)
	})
	mux.HandleFunc("GET /v1/capture", s.capture)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		// No route: the mux's answer (404, or 405 with its Allow header)
		// as the API's JSON error rather than text.
		st := &statusOnly{header: w.Header()}
		mux.ServeHTTP(st, r)
		if st.code < 400 {
			w.WriteHeader(st.code)
			return
		}
		writeError(w, st.code, fmt.Sprintf("%s %s: %s", r.Method, r.URL.Path, strings.ToLower(http.StatusText(st.code))))
	})
}

// statusOnly is a ResponseWriter that keeps the status and the header and
// discards the body.
type statusOnly struct {
	header http.Header
	code   int
}

func (s *statusOnly) Header() http.Header { return s.header }
func (s *statusOnly) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
}
func (s *statusOnly) Write(b []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	return len(b), nil
}

// Serve serves the API on ln until ctx ends, then closes every
// connection and returns. The caller creates ln with the
// access rights it wants (mode 0600 for the control socket).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	// Requests see ctx end, so that a running capture finishes its
	// stream (the client reads a clean end, not a cut record).
	// ReadTimeout does not end a long capture: net/http lifts the read
	// deadline once the request has been read.
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: cmp.Or(s.readTimeout, defaultReadTimeout),
		BaseContext: func(net.Listener) context.Context { return ctx }, ErrorLog: logx.StdLogger(s.Logger)}
	shut := make(chan struct{})
	go func() {
		defer close(shut)
		// Shutdown, bounded: requests are short and captures end with
		// ctx; a client's idle or half-open connection must not delay
		// the daemon's exit for longer.
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil {
			logx.OrDiscard(s.Logger).WithError(err).Warn("control API: requests still under way at shutdown; their connections are cut")
			hs.Close()
		}
	}()
	err := hs.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		<-shut // the requests under way have ended
		return nil
	}
	return fmt.Errorf("control API: %w", err)
}

func (s *Server) ports(w http.ResponseWriter, _ *http.Request) {
	macs := map[int][]vswitch.MAC{}
	for _, e := range s.Switch.FDB() {
		macs[e.PortID] = append(macs[e.PortID], e.MAC)
	}
	st := s.Switch.Stats()
	out := make([]Port, 0, len(st.Ports))
	for _, ps := range st.Ports {
		out = append(out, Port{PortStats: ps, MACs: append([]vswitch.MAC{}, macs[ps.ID]...)})
	}
	writeJSON(w, out)
}

func (s *Server) attach(w http.ResponseWriter, r *http.Request) {
	if s.Attach == nil {
		writeError(w, http.StatusNotImplemented, "attaching ports is not supported by this server")
		return
	}
	var req AttachRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "decode request: "+err.Error())
		return
	}
	// One object: what follows it (a second object, garbage) was ignored.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "decode request: data after the JSON object")
		return
	}
	if (req.Tap == "") == (req.Connect == "") {
		writeError(w, http.StatusBadRequest, `give exactly one of "tap" and "connect"`)
		return
	}
	if err := CheckTapName(req.Tap); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// The switch would open the tap again and find it busy (its own
	// descriptor), and a second port of the name could not be detached by
	// name.
	for _, a := range s.Switch.Ports() {
		if req.Tap != "" && a.Name() == req.Tap {
			msg := fmt.Sprintf("tap %s is already attached (port %d)", req.Tap, a.ID())
			if t, ok := a.Port().(interface{ IsNamed(string) bool }); ok && !t.IsNamed(req.Tap) {
				if !slices.Contains(s.Switch.Ports(), a) {
					// Detached meanwhile: its tap, closed already, has
					// no name. Attach waits for it to be gone.
					continue
				}
				// The port keeps the name its tap had when attached.
				msg = fmt.Sprintf("tap %s: port %d has that name, but its tap has been renamed, or moved to another network namespace, since it was attached: "+
					"detach port %d first, or give this tap another name", req.Tap, a.ID(), a.ID())
			} else if a.Kind() != KindTap {
				msg = fmt.Sprintf("tap %s: port %d, of kind %s, has that name: give the tap another", req.Tap, a.ID(), a.Kind())
			}
			writeError(w, http.StatusConflict, msg)
			return
		}
	}
	if err := s.Attach(req); err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrBadRequest):
			code = http.StatusBadRequest
		case errors.Is(err, ErrConflict):
			code = http.StatusConflict
		}
		writeError(w, code, err.Error())
		return
	}
	// The new port, as DELETE answers with the old one; a URL being
	// dialled has no port yet: ID 0 and the name it will have.
	ps := vswitch.PortStats{Name: req.Tap}
	if a, err := s.findPort(req.Tap); req.Tap != "" && err == nil {
		ps = a.Stats()
	} else if u, err := listen.Parse(req.Connect); err == nil {
		ps.Name = u.PortName()
	}
	// The header before WriteHeader, or it is text/plain.
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	writeJSON(w, ps)
}

// findPort resolves key to a port: by ID when key is one written as the
// API writes IDs (no sign, no leading zero), else by name; a tap may be
// named "7" or "dhcp", and taking the first port whose ID or name matched
// detached the wrong one. A URL (unix:///run/vm.sock) finds the port
// named after it (unix:/run/vm.sock), which the switch dialled. It returns an *httpError, 404 when no port
// matches and 409 when several have the name.
func (s *Server) findPort(key string) (*vswitch.Attachment, error) {
	ports := s.Switch.Ports()
	if id, err := strconv.Atoi(key); err == nil && strconv.Itoa(id) == key {
		for _, a := range ports {
			if a.ID() == id {
				return a, nil
			}
		}
	}
	var found []*vswitch.Attachment
	for _, a := range ports {
		if a.Name() == key {
			found = append(found, a)
		}
	}
	switch len(found) {
	case 0:
		if u, err := listen.Parse(key); err == nil && u.PortName() != key {
			return s.findPort(u.PortName()) // a dialled port, by its URL
		}
		return nil, &httpError{http.StatusNotFound, fmt.Sprintf("no port %q", key)}
	case 1:
		return found[0], nil
	}
	ids := make([]string, len(found))
	for i, a := range found {
		ids[i] = strconv.Itoa(a.ID())
	}
	return nil, &httpError{http.StatusConflict, fmt.Sprintf("%d ports are named %q (IDs %s): give the ID", len(found), key, strings.Join(ids, ", "))}
}

// httpError is an answer's status and error message.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func notFound(err error) bool {
	var he *httpError
	return errors.As(err, &he) && he.code == http.StatusNotFound
}

// CheckTapName refuses a tap name that the API could not tell from a port
// ID, one of decimal digits only (the kernel accepts such names), and a
// kernel name template such as tap%d.
func CheckTapName(name string) error {
	if name != "" && strings.Trim(name, "0123456789") == "" {
		return fmt.Errorf("tap %q: a name of digits only would be taken for a port ID: choose another", name)
	}
	if strings.Contains(name, "%") {
		// The kernel would pick the name ("tap%d" → tap0): the port gets
		// that name, and the one given finds it no more, so a reload
		// made another tap each time and a detach found none.
		return fmt.Errorf("tap %q: a name template (%%) cannot be attached, detached or reloaded by name: give the full name", name)
	}
	return nil
}

func (s *Server) detach(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("id")
	a, err := s.findPort(key)
	if notFound(err) && s.StopDial != nil {
		if name := s.StopDial(key); name != "" {
			// No port yet: ID 0 tells the client.
			writeJSON(w, vswitch.PortStats{Name: name})
			return
		}
	}
	if err != nil {
		writeHTTPError(w, err)
		return
	}
	// Neither comes back but by a restart, and a closed responder gives up
	// its lease file's lock while the switch still runs.
	switch a.Kind() {
	case KindDHCP:
		writeError(w, http.StatusConflict, fmt.Sprintf("port %d is the DHCP responder: it cannot be detached; restart the switch with --dhcp=false", a.ID()))
		return
	case KindHost:
		writeError(w, http.StatusConflict, fmt.Sprintf("port %d is the host interface %s: it cannot be detached; restart the switch without it "+
			"(no --host or --host-bridge, and ports of its own such as --listen: the default setup has one)", a.ID(), a.Name()))
		return
	}
	a.Close()
	<-a.Done()
	writeJSON(w, a.Stats())
}

func (s *Server) capture(w http.ResponseWriter, r *http.Request) {
	var cfg vswitch.CaptureConfig
	if p := r.URL.Query().Get("port"); p != "" {
		a, err := s.findPort(p)
		if err != nil {
			writeHTTPError(w, err)
			return
		}
		cfg.Port = a.ID()
	}
	if s.captures.Add(1) > MaxCaptures {
		s.captures.Add(-1)
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("%d captures are running already, the most there may be", MaxCaptures))
		return
	}
	defer s.captures.Add(-1)
	c := s.Switch.StartCapture(cfg)
	defer func() {
		c.Close()
		if n := c.Dropped(); n > 0 {
			port := cmp.Or(r.URL.Query().Get("port"), "all")
			logx.OrDiscard(s.Logger).WithFields(logrus.Fields{"port": port, "lost": n}).
				Warn("capture ended; its reader was too slow for some frames, which were not captured")
		}
	}()
	rc := http.NewResponseController(w)
	// A reader that has stopped reading holds the handler in Write: when
	// the server stops, cut it off after captureEndGrace.
	defer context.AfterFunc(r.Context(), func() { _ = rc.SetWriteDeadline(time.Now().Add(captureEndGrace)) })()
	w.Header().Set("Content-Type", "application/vnd.tcpdump.pcap")
	w.Header().Set("Trailer", captureEndHeader)
	pw, err := pcap.NewWriter(w, 0)
	if err != nil {
		return
	}
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case f, ok := <-c.C():
			if !ok {
				// The stream ends after its last whole record, and the
				// trailer tells the client why.
				if c.PortLeft() {
					w.Header().Set(captureEndHeader, capturePortLeft)
				}
				return
			}
			if err := pw.WriteFrame(f.Time, f.Data); err != nil {
				return
			}
			// Flush when nothing else is waiting, so that a slow trickle
			// of frames still reaches the reader at once.
			if flusher != nil && len(c.C()) == 0 {
				flusher.Flush()
			}
		}
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeHTTPError answers with err's status when it is an *httpError, else
// with 500.
func writeHTTPError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var he *httpError
	if errors.As(err, &he) {
		code = he.code
	}
	writeError(w, code, err.Error())
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(errorBody{Error: msg})
}
