package api

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	vswitch "github.com/tapswitch/tapswitch/switch"
)

// DefaultTimeout bounds a request of a Client, and the wait for a
// capture's first answer.
const DefaultTimeout = 30 * time.Second

// Client talks to the control API on a unix socket.
type Client struct {
	// Timeout bounds each request (default DefaultTimeout; negative: no
	// bound but the context's): a switch stopped (SIGSTOP) or hung would
	// otherwise keep a script waiting for ever. A capture's stream, once it
	// has begun, is not bounded.
	Timeout time.Duration

	path string
	hc   *http.Client
}

// NewClient returns a client for the control socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableCompression: true,
	}
	return &Client{path: path, hc: &http.Client{Transport: tr}}
}

// Do sends a request with body in (if not nil) as JSON and decodes the
// answer into out (if not nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	if d := c.timeout(); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, d, errNoAnswer)
		defer cancel()
	}
	resp, err := c.open(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
	} else {
		err = json.NewDecoder(resp.Body).Decode(out)
	}
	if err != nil {
		return fmt.Errorf("control socket %s: read answer to %s %s: %w", c.path, method, path, c.timedOut(ctx, err))
	}
	return nil
}

func (c *Client) timeout() time.Duration { return cmp.Or(c.Timeout, DefaultTimeout) }

// errNoAnswer is the cause of a request's end by the Client's Timeout (not
// by a deadline of the caller's context, such as capture --duration).
var errNoAnswer = errors.New("no answer")

// timedOut names the timeout when it is what ended a request.
func (c *Client) timedOut(ctx context.Context, err error) error {
	if errors.Is(context.Cause(ctx), errNoAnswer) {
		return fmt.Errorf("%w: no answer within %v (is tapswitch serve stopped or hung?)", err, c.timeout())
	}
	return err
}

func (c *Client) noAnswer(method, path string) error {
	return fmt.Errorf("control socket %s: %s %s: no answer within %v (is tapswitch serve stopped or hung?): %w",
		c.path, method, path, c.timeout(), context.DeadlineExceeded)
}

// Capture opens a pcap stream of the frames crossing the switch (of one
// port when port is not empty). Close the stream to stop the capture.
func (c *Client) Capture(ctx context.Context, port string) (*CaptureStream, error) {
	p := "/v1/capture"
	if port != "" {
		p += "?port=" + url.QueryEscape(port)
	}
	// The timeout ends the wait for the answer's header, not the stream.
	ctx, cancel := context.WithCancelCause(ctx)
	var timer *time.Timer
	if d := c.timeout(); d > 0 {
		timer = time.AfterFunc(d, func() { cancel(errNoAnswer) })
	}
	resp, err := c.open(ctx, http.MethodGet, p, nil)
	if timer != nil && !timer.Stop() && err == nil {
		resp.Body.Close()
		err = c.noAnswer(http.MethodGet, p)
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	return &CaptureStream{ReadCloser: resp.Body, resp: resp, cancel: cancel}, nil
}

// CaptureStream is a capture's pcap stream.
type CaptureStream struct {
	io.ReadCloser
	resp   *http.Response
	cancel context.CancelCauseFunc
}

// Close ends the stream.
func (s *CaptureStream) Close() error {
	err := s.ReadCloser.Close()
	s.cancel(nil)
	return err
}

// PortLeft reports, once Read has returned io.EOF, whether the capture
// ended because the port it was limited to left the switch.
func (s *CaptureStream) PortLeft() bool {
	return s.resp.Trailer.Get(captureEndHeader) == capturePortLeft
}

// Detach detaches the port with this ID or name, and returns its final
// counters. The name goes into the path escaped: those of socket ports
// have slashes.
func (c *Client) Detach(ctx context.Context, port string) (vswitch.PortStats, error) {
	var ps vswitch.PortStats
	err := c.Do(ctx, "DELETE", "/v1/ports/"+url.PathEscape(port), nil, &ps)
	return ps, err
}

func (c *Client) open(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://tapswitch"+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(context.Cause(ctx), errNoAnswer) {
			return nil, c.noAnswer(method, path)
		}
		return nil, fmt.Errorf("control socket %s: %w (is tapswitch serve running? see --ctl)", c.path, unwrapURLError(err))
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var eb errorBody
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
			eb.Error = strings.TrimSpace(string(b))
		}
		return nil, fmt.Errorf("%s %s: %s", method, path, eb.Error)
	}
	return resp, nil
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
