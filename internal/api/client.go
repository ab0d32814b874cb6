package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	vswitch "github.com/tapswitch/tapswitch/switch"
)

// Client talks to the control API on a unix socket.
type Client struct {
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
	resp, err := c.open(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("control socket %s: decode %s %s: %w", c.path, method, path, err)
	}
	return nil
}

// Capture opens a pcap stream of the frames crossing the switch (of one
// port when port is not empty). Close the stream to stop the capture.
func (c *Client) Capture(ctx context.Context, port string) (*CaptureStream, error) {
	p := "/v1/capture"
	if port != "" {
		p += "?port=" + url.QueryEscape(port)
	}
	resp, err := c.open(ctx, http.MethodGet, p, nil)
	if err != nil {
		return nil, err
	}
	return &CaptureStream{ReadCloser: resp.Body, resp: resp}, nil
}

// CaptureStream is a capture's pcap stream.
type CaptureStream struct {
	io.ReadCloser
	resp *http.Response
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
