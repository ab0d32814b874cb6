package main

import (
	"errors"
	"io"
	"os"
	"syscall"
	"testing"
	"time"
)

// fakeVM is a VM whose guest ignores a request to shut down unless obey
// is set, when it stops (as reported on ended).
type fakeVM struct {
	obey       bool
	requestErr error
	ended      chan error
	requests   int
	stops      int
}

func (f *fakeVM) RequestStop() error {
	f.requests++
	if f.requestErr == nil && f.obey {
		f.ended <- nil
	}
	return f.requestErr
}

func (f *fakeVM) Stop() error {
	f.stops++
	select {
	case f.ended <- nil: // as the real VM reports its new state
	default:
	}
	return nil
}

// TestWaitStop: a guest that ignores the request to shut down is stopped
// at once on a second signal or after the timeout. The program used to
// ask once and then wait for ever.
func TestWaitStop(t *testing.T) {
	for _, tc := range []struct {
		name            string
		vm              *fakeVM
		signals         int
		timeout         time.Duration
		requests, stops int
	}{
		{"guest shuts down", &fakeVM{obey: true}, 1, time.Hour, 1, 0},
		{"second signal", &fakeVM{}, 2, time.Hour, 1, 1},
		{"timeout", &fakeVM{}, 1, time.Millisecond, 1, 1},
		{"request refused", &fakeVM{requestErr: errors.New("not now")}, 1, time.Hour, 1, 1},
		{"no timeout", &fakeVM{}, 1, 0, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.vm.ended = make(chan error, 1)
			sig := make(chan os.Signal, tc.signals)
			for range tc.signals {
				sig <- syscall.SIGTERM
			}
			done := make(chan error, 1)
			go func() { done <- waitStop(tc.vm, sig, tc.vm.ended, tc.timeout, io.Discard) }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("waitStop still waiting 20 s on")
			}
			if tc.vm.requests != tc.requests || tc.vm.stops != tc.stops {
				t.Errorf("%d requests, %d stops; want %d, %d", tc.vm.requests, tc.vm.stops, tc.requests, tc.stops)
			}
		})
	}
	// A failed VM ends the wait with its error.
	ended := make(chan error, 1)
	ended <- errors.New("the VM failed")
	if err := waitStop(&fakeVM{}, nil, ended, time.Hour, io.Discard); err == nil {
		t.Error("waitStop = nil for a failed VM")
	}
}
