//go:build race

package dgram

// raceEnabled is true under the race detector. A test that skips when it
// is true runs only in `make test`'s pass without -race, which takes the
// tests named *NoAllocs (and TestMemory64Ports): name it so.
const raceEnabled = true
