package vswitch

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// fdb is the forwarding database: which port each unicast MAC was last seen
// on. Lookups and refreshes of known entries take the read lock only; the
// write lock is taken to add, move or remove entries.
//
// An entry older than age is treated as absent by lookup and replaced by
// learn; expired entries are deleted by sweep, which runs periodically and
// whenever the table is full, so the bound counts only live entries.
type fdb struct {
	mu  sync.RWMutex
	m   map[MAC]*fdbEntry
	max int
	age int64 // nanoseconds

	lastFullSweep int64 // guarded by mu (write)

	learned, moved, refused, expired, purged atomic.Uint64
}

type fdbEntry struct {
	port atomic.Pointer[Attachment]
	seen atomic.Int64 // when the last frame from this MAC came, on the switch's clock (Switch.nanos)
}

func newFDB(max int, age time.Duration) *fdb {
	return &fdb{m: make(map[MAC]*fdbEntry), max: max, age: int64(age)}
}

func (f *fdb) live(e *fdbEntry, now int64) bool {
	return now-e.seen.Load() < f.age && !e.port.Load().removed.Load()
}

// learn records that mac was seen on port a at time now.
func (f *fdb) learn(mac MAC, a *Attachment, now int64) {
	f.mu.RLock()
	e := f.m[mac]
	if e != nil && e.port.Load() == a {
		// Refresh without the write lock. A concurrent sweep may delete
		// e between the check and the store; the next frame re-learns it.
		if e.seen.Load() != now {
			e.seen.Store(now)
		}
		f.mu.RUnlock()
		return
	}
	f.mu.RUnlock()

	f.mu.Lock()
	defer f.mu.Unlock()
	// A port removed while its batch is forwarded has been purged (remove
	// marks it before purge takes the lock): it learns nothing more, and
	// takes no address from a live port.
	if a.removed.Load() {
		return
	}
	if max := a.cfg.MaxMACs; max > 0 && a.macs.Load() >= int64(max) {
		// At its limit: its expired entries count until a sweep deletes
		// them (every 30 s at most), so reclaim them first.
		f.reclaim(now)
	}
	if e = f.m[mac]; e != nil {
		if old := e.port.Load(); old != a {
			if !a.mayLearn(now) {
				return
			}
			if f.live(e, now) {
				f.moved.Add(1)
			}
			old.macs.Add(-1)
			a.macs.Add(1)
			e.port.Store(a)
		}
		e.seen.Store(now)
		return
	}
	if len(f.m) >= f.max {
		f.reclaim(now)
		if len(f.m) >= f.max {
			f.refused.Add(1)
			return
		}
	}
	if !a.mayLearn(now) {
		return
	}
	a.macs.Add(1)
	e = &fdbEntry{}
	e.port.Store(a)
	e.seen.Store(now)
	f.m[mac] = e
	f.learned.Add(1)
}

// reclaim deletes expired entries for a full table or a port at its
// MaxMACs, at most once a second, so that a flood of new addresses cannot
// turn every frame into a full scan. Called with the write lock held.
func (f *fdb) reclaim(now int64) {
	if now-f.lastFullSweep >= int64(time.Second) {
		f.lastFullSweep = now
		f.sweepLocked(now)
	}
}

// lookup returns the port mac lives on, or nil when it is unknown, expired
// or its port is gone.
func (f *fdb) lookup(mac MAC, now int64) *Attachment {
	f.mu.RLock()
	e := f.m[mac]
	f.mu.RUnlock()
	if e == nil || !f.live(e, now) {
		return nil
	}
	return e.port.Load()
}

// sweep deletes expired entries and returns how many it deleted.
func (f *fdb) sweep(now int64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sweepLocked(now)
}

func (f *fdb) sweepLocked(now int64) int {
	n := 0
	for mac, e := range f.m {
		if !f.live(e, now) {
			e.port.Load().macs.Add(-1)
			delete(f.m, mac)
			n++
		}
	}
	f.expired.Add(uint64(n))
	return n
}

// purge deletes every entry that points at a.
func (f *fdb) purge(a *Attachment) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for mac, e := range f.m {
		if e.port.Load() == a {
			a.macs.Add(-1)
			delete(f.m, mac)
			f.purged.Add(1)
		}
	}
}

// flush deletes every entry.
func (f *fdb) flush() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.m)
	for _, e := range f.m {
		e.port.Load().macs.Add(-1)
	}
	clear(f.m)
	f.purged.Add(uint64(n))
	return n
}

// FDBEntry is one learned address in a snapshot of the FDB.
type FDBEntry struct {
	MAC    MAC           `json:"mac"`
	Port   string        `json:"port"`
	PortID int           `json:"port_id"`
	Age    time.Duration `json:"age_ns"`
}

func (f *fdb) entries(now int64) []FDBEntry {
	f.mu.RLock()
	out := make([]FDBEntry, 0, len(f.m))
	for mac, e := range f.m {
		if !f.live(e, now) {
			continue
		}
		p := e.port.Load()
		out = append(out, FDBEntry{MAC: mac, Port: p.name, PortID: p.id, Age: time.Duration(now - e.seen.Load())})
	}
	f.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].PortID != out[j].PortID {
			return out[i].PortID < out[j].PortID
		}
		return string(out[i].MAC[:]) < string(out[j].MAC[:])
	})
	return out
}

func (f *fdb) stats() FDBStats {
	f.mu.RLock()
	size := len(f.m)
	f.mu.RUnlock()
	return FDBStats{
		Size:     size,
		Max:      f.max,
		Learned:  f.learned.Load(),
		Moved:    f.moved.Load(),
		Refused:  f.refused.Load(),
		Expired:  f.expired.Load(),
		Purged:   f.purged.Load(),
		AgeLimit: time.Duration(f.age),
	}
}
