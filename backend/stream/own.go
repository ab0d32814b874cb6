package stream

import (
	"net"
	"os"
	"runtime"
	"strings"
	"sync"

	"github.com/tapswitch/tapswitch/backend/listen"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

// live holds the open Listeners of each switch, so that Dial can tell a
// connection to one of its own switch's listeners (ownListener). Only the
// same switch counts: a process may run several switches (the tests, the
// load generator), and one may well be another's client.
var live struct {
	sync.Mutex
	m map[*vswitch.Switch]map[*Listener]struct{}
}

func register(l *Listener) {
	live.Lock()
	defer live.Unlock()
	if live.m == nil {
		live.m = make(map[*vswitch.Switch]map[*Listener]struct{})
	}
	if live.m[l.sw] == nil {
		live.m[l.sw] = make(map[*Listener]struct{})
	}
	live.m[l.sw][l] = struct{}{}
}

func unregister(l *Listener) {
	live.Lock()
	defer live.Unlock()
	delete(live.m[l.sw], l)
	if len(live.m[l.sw]) == 0 {
		delete(live.m, l.sw)
	}
}

// ownListener returns the listener of sw that c, a connection just dialled
// to a, reached, or nil if it reached none of them. Attached, the
// connection would make both of its ends ports of sw, and every frame
// flooded would go round between them for ever.
func ownListener(sw *vswitch.Switch, a listen.Addr, c net.Conn) *Listener {
	live.Lock()
	ls := make([]*Listener, 0, len(live.m[sw]))
	for l := range live.m[sw] {
		ls = append(ls, l)
	}
	live.Unlock()
	if len(ls) == 0 {
		return nil
	}
	switch a.Network {
	case "unix":
		if runtime.GOOS == "linux" && strings.HasPrefix(a.Address, "@") {
			return nil // an abstract name; listeners have socket files
		}
		// Through any symlink or other path to the same socket file.
		fi, err := os.Stat(a.Address)
		if err != nil {
			return nil
		}
		for _, l := range ls {
			if l.file != nil && l.file.SameFile(fi) {
				return l
			}
		}
	case "tcp":
		remote, ok1 := c.RemoteAddr().(*net.TCPAddr)
		local, ok2 := c.LocalAddr().(*net.TCPAddr)
		if !ok1 || !ok2 {
			return nil
		}
		for _, l := range ls {
			if la, ok := l.ln.Addr().(*net.TCPAddr); ok && tcpReaches(la, remote, local) {
				return l
			}
		}
	}
	return nil
}

// tcpReaches reports whether a connection from local to remote is one a
// listener bound to la accepted: the same port, and la's address, or a
// wildcard la and a remote address of this host (a loopback one, or the
// connection's own local address). An IPv4 wildcard takes no IPv6
// connection. (A listener with no host is an IPv6 socket that takes
// both, and la then reads "[::]"; one on "0.0.0.0" is IPv4 only, see
// listen.Addr.ListenNetwork.)
func tcpReaches(la, remote, local *net.TCPAddr) bool {
	if la.Port != remote.Port {
		return false
	}
	if la.IP.Equal(remote.IP) {
		return true
	}
	if !la.IP.IsUnspecified() {
		return false
	}
	if la.IP.To4() != nil && remote.IP.To4() == nil {
		return false
	}
	return remote.IP.IsLoopback() || remote.IP.Equal(local.IP)
}
