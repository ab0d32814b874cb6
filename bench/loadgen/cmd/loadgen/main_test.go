package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestOrder checks that the configurations take turns at going first.
func TestOrder(t *testing.T) {
	for round, want := range [][]int{{0, 1}, {1, 0}, {0, 1}, {1, 0}} {
		if got := order(round, 2); !slices.Equal(got, want) {
			t.Errorf("round %d: order %v, want %v", round, got, want)
		}
	}
}

// TestRunArgs checks that run refuses what would leave it no sample to
// take a median of, before it starts anything.
func TestRunArgs(t *testing.T) {
	for _, tc := range []struct {
		rounds int
		d      time.Duration
		want   string
	}{
		{0, time.Second, "-rounds 0: want at least 1"},
		{-1, time.Second, "-rounds -1: want at least 1"},
		{1, 0, "-duration 0s: want more than 0"},
	} {
		err := run("stream", "64", 0, tc.rounds, tc.d, 16, "", "", 0)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("rounds %d, duration %v: error %v, want %q", tc.rounds, tc.d, err, tc.want)
		}
	}
}
