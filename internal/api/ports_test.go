package api_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tapswitch/tapswitch/internal/api"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// rawDo sends one request to the API at sock and returns the status,
// Content-Type and body of the answer, unparsed.
func rawDo(t *testing.T, sock, method, path, body string) (code int, ctype, answer string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), method, "http://tapswitch"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// TestPortKeys: a port is found by its ID written as the API writes IDs,
// else by a name only one port has. The first port whose ID or name
// matched used to be taken: detaching 7 detached the tap named "7" (ID 6)
// rather than port 7, a tap named "dhcp" could not be detached without
// detaching the DHCP responder, and "03" or "+3" detached port 3. A tap
// whose name the API cannot tell from an ID, or that the switch has, is
// not attached.
func TestPortKeys(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	add := func(name string) *vswitch.Attachment {
		t.Helper()
		a, err := sw.AddPort(porttest.New(porttest.Config{Name: name}), vswitch.PortConfig{Kind: "mem"})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	byName := map[string]*vswitch.Attachment{}
	for _, name := range []string{"dhcp", "a", "b", "c", "d", "7", "x", "twin", "twin"} {
		byName[name] = add(name)
	}
	var attached []api.AttachRequest
	sock, stop := serve(t, &api.Server{Switch: sw, Attach: func(req api.AttachRequest) error {
		attached = append(attached, req)
		return nil
	}})
	defer stop()
	live := func(name string) bool {
		select {
		case <-byName[name].Done():
			return false
		default:
			return true
		}
	}

	for _, key := range []string{"03", "+3", "3.0"} {
		if code, _, body := rawDo(t, sock, "DELETE", "/v1/ports/"+key, ""); code != http.StatusNotFound {
			t.Errorf("DELETE %s: %d %s, want 404: no port has that name", key, code, body)
		}
	}
	if !live("b") {
		t.Fatal("port 3 (b) detached by a key that is not its ID")
	}
	if code, _, body := rawDo(t, sock, "DELETE", "/v1/ports/7", ""); code != http.StatusOK || !strings.Contains(body, `"name": "x"`) {
		t.Errorf("DELETE 7: %d %s, want port 7 (x) detached", code, body)
	}
	if live("x") || !live("7") {
		t.Errorf("DELETE 7: x live %v, the tap named 7 live %v; want port 7 (x) gone, the other kept", live("x"), live("7"))
	}
	// Now no port has ID 7: the name is the key.
	if code, _, body := rawDo(t, sock, "DELETE", "/v1/ports/7", ""); code != http.StatusOK || live("7") {
		t.Errorf("DELETE 7 once port 7 is gone: %d %s, want the port named 7 detached", code, body)
	}
	code, _, body := rawDo(t, sock, "DELETE", "/v1/ports/twin", "")
	if code != http.StatusConflict || !strings.Contains(body, "give the ID") || !live("twin") {
		t.Errorf("DELETE twin: %d %s, want 409 naming both ports' IDs, and both kept", code, body)
	}
	if code, _, body := rawDo(t, sock, "GET", "/v1/capture?port=twin", ""); code != http.StatusConflict {
		t.Errorf("capture of twin: %d %s, want 409", code, body)
	}
	for _, c := range []struct {
		tap  string
		code int
	}{{"dhcp", http.StatusConflict}, {"a", http.StatusConflict}, {"12", http.StatusBadRequest}, {"007", http.StatusBadRequest}, {"ts%d", http.StatusBadRequest}} {
		code, _, body := rawDo(t, sock, "POST", "/v1/ports", `{"tap":"`+c.tap+`"}`)
		if code != c.code {
			t.Errorf("attach tap %s: %d %s, want %d", c.tap, code, body, c.code)
		}
		// The responder's name: it is not a tap "already attached".
		if c.tap == "dhcp" && !strings.Contains(body, "has that name") {
			t.Errorf("attach tap dhcp: %s, want it to say that the responder's port has the name", body)
		}
	}
	if len(attached) != 0 {
		t.Errorf("attached %v, want nothing", attached)
	}
	if !live("dhcp") || !live("a") {
		t.Error("a refused attach removed a port")
	}
}

// TestAnswersAreJSON: POST /v1/ports takes one JSON object and nothing
// after it (trailing data was ignored: {"tap":"a"} garbage attached a),
// its 201 answer is JSON (it was text/plain: the header was set after the
// status), and so are the answers to a path or method the API does not
// have (they were the mux's text).
func TestAnswersAreJSON(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	var attached []api.AttachRequest
	sock, stop := serve(t, &api.Server{Switch: sw, Attach: func(req api.AttachRequest) error {
		attached = append(attached, req)
		return nil
	}})
	defer stop()
	for _, body := range []string{`{"tap":"a"} garbage`, `{"tap":"a"}{"connect":"unix:///tmp/q.sock"}`, `{"tap":"a"} {}`} {
		if code, ctype, answer := rawDo(t, sock, "POST", "/v1/ports", body); code != http.StatusBadRequest || ctype != "application/json" {
			t.Errorf("POST %s: %d %s %s, want 400 in JSON", body, code, ctype, answer)
		}
	}
	if len(attached) != 0 {
		t.Errorf("attached %v from requests with trailing data", attached)
	}
	code, ctype, answer := rawDo(t, sock, "POST", "/v1/ports", "{\"tap\":\"a\"}\n")
	if code != http.StatusCreated || ctype != "application/json" || len(attached) != 1 {
		t.Errorf("POST {\"tap\":\"a\"}: %d %s %s, want 201 in JSON", code, ctype, answer)
	}
	for _, c := range []struct {
		method, path string
		code         int
		want         string
	}{
		{"GET", "/v1/nonesuch", http.StatusNotFound, `"error":"GET /v1/nonesuch: not found"`},
		{"DELETE", "/v1/fdb", http.StatusMethodNotAllowed, `"error":"DELETE /v1/fdb: method not allowed"`},
	} {
		code, ctype, answer := rawDo(t, sock, c.method, c.path, "")
		if code != c.code || ctype != "application/json" || !strings.Contains(answer, c.want) {
			t.Errorf("%s %s: %d %s %s, want %d with %s", c.method, c.path, code, ctype, answer, c.code, c.want)
		}
	}
}

// TestAttachErrorCodes: Attach's errors marked ErrBadRequest answer 400,
// ErrConflict 409 (a URL being dialled already was 400, a tap attached
// already 409), anything else 500.
func TestAttachErrorCodes(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	errs := map[string]error{
		"unix:///tmp/bad.sock":  fmt.Errorf("%w: not a stream URL", api.ErrBadRequest),
		"unix:///tmp/dup.sock":  fmt.Errorf("%w: being dialled already", api.ErrConflict),
		"unix:///tmp/fail.sock": errors.New("out of descriptors"),
	}
	sock, stop := serve(t, &api.Server{Switch: sw, Attach: func(req api.AttachRequest) error {
		return errs[req.Connect]
	}})
	defer stop()
	for url, want := range map[string]int{
		"unix:///tmp/bad.sock": http.StatusBadRequest, "unix:///tmp/dup.sock": http.StatusConflict,
		"unix:///tmp/fail.sock": http.StatusInternalServerError, "unix:///tmp/ok.sock": http.StatusCreated,
	} {
		if code, _, body := rawDo(t, sock, "POST", "/v1/ports", `{"connect":"`+url+`"}`); code != want {
			t.Errorf("attach %s: %d %s, want %d", url, code, body, want)
		}
	}
}

// TestDetachRefusesResponderAndHost: detaching the DHCP responder or the
// host interface is refused. Nothing brought them back but a restart, and
// the closed responder gave up its lease file's lock, so a second switch
// could start on the same file while this one still served its leases.
func TestDetachRefusesResponderAndHost(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	var atts []*vswitch.Attachment
	for _, c := range []struct{ name, kind string }{{"dhcp", api.KindDHCP}, {"tapswitch0", api.KindHost}, {"tap0", api.KindTap}} {
		a, err := sw.AddPort(porttest.New(porttest.Config{Name: c.name}), vswitch.PortConfig{Kind: c.kind})
		if err != nil {
			t.Fatal(err)
		}
		atts = append(atts, a)
	}
	sock, stop := serve(t, &api.Server{Switch: sw})
	defer stop()
	// The hints say how to run without them: the default setup has both
	// without --dhcp or --host.
	hints := []string{"restart the switch with --dhcp=false", "the default setup has one", ""}
	for i, key := range []string{"dhcp", "2", "tap0"} {
		code, _, body := rawDo(t, sock, "DELETE", "/v1/ports/"+key, "")
		want := http.StatusConflict
		if i == 2 {
			want = http.StatusOK
		}
		if code != want || !strings.Contains(body, hints[i]) {
			t.Errorf("DELETE %s: %d %s, want %d and %q", key, code, body, want, hints[i])
		}
		select {
		case <-atts[i].Done():
			if i != 2 {
				t.Errorf("DELETE %s: the port was closed", key)
			}
		default:
			if i == 2 {
				t.Errorf("DELETE %s: the tap was not detached", key)
			}
		}
	}
}

// TestLeasesJSON: a static lease has no expiry, and its JSON none (it was
// "0001-01-01T00:00:00Z").
func TestLeasesJSON(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	exp := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	sock, stop := serve(t, &api.Server{Switch: sw, Leases: func() []api.Lease {
		return []api.Lease{
			{MAC: porttest.MAC(1), IP: netip.MustParseAddr("198.18.0.10"), Static: true, State: "static"},
			{MAC: porttest.MAC(2), IP: netip.MustParseAddr("198.18.0.11"), Expiry: exp, State: "bound"},
		}
	}})
	defer stop()
	code, _, body := rawDo(t, sock, "GET", "/v1/leases", "")
	if code != http.StatusOK || strings.Count(body, `"expiry"`) != 1 || !strings.Contains(body, `"expiry": "2026-11-27T12:00:00Z"`) {
		t.Errorf("GET /v1/leases: %d %s; want one expiry, the bound lease's", code, body)
	}
}

// namedTap is a tap-like port whose IsNamed, like a tap's once its
// descriptor is closed, reports no name; before answering it runs
// during, which the test uses to detach the port at that moment.
type namedTap struct {
	*porttest.Port
	during func()
}

func (p *namedTap) IsNamed(string) bool {
	p.during()
	return false
}

// TestAttachRacingDetach: an attach of a tap whose port is being detached
// at that moment goes on to Attach (which waits for the old port to be
// gone). The API saw the closing tap answer no name, and refused the
// attach with 409 "renamed since".
func TestAttachRacingDetach(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	p := &namedTap{Port: porttest.New(porttest.Config{Name: "t0"})}
	a, err := sw.AddPort(p, vswitch.PortConfig{Kind: api.KindTap})
	if err != nil {
		t.Fatal(err)
	}
	p.during = func() { a.Close() } // the detach ends between the API's two looks
	var attached []api.AttachRequest
	sock, stop := serve(t, &api.Server{Switch: sw, Attach: func(req api.AttachRequest) error {
		attached = append(attached, req)
		return nil
	}})
	defer stop()
	if code, _, body := rawDo(t, sock, "POST", "/v1/ports", `{"tap":"t0"}`); code != http.StatusCreated || len(attached) != 1 {
		t.Errorf("attach during a detach: %d %s, attached %v; want 201 and the tap attached", code, body, attached)
	}

	// A port still on the switch whose tap has another name now is
	// refused, as before.
	q := &namedTap{Port: porttest.New(porttest.Config{Name: "t1"}), during: func() {}}
	if _, err := sw.AddPort(q, vswitch.PortConfig{Kind: api.KindTap}); err != nil {
		t.Fatal(err)
	}
	if code, _, body := rawDo(t, sock, "POST", "/v1/ports", `{"tap":"t1"}`); code != http.StatusConflict || !strings.Contains(body, "renamed") {
		t.Errorf("attach of a renamed tap's name: %d %s, want 409 renamed", code, body)
	}
}
