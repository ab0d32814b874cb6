//go:build !linux

package dgram

import (
	"os"

	"github.com/tapswitch/tapswitch/backend/listen"
)

// pinPeer returns path: outside Linux there is no way to send to a socket
// other than by its path, which is looked up at every send (see the Linux
// pinPeer for what a sender that swaps it can do).
func pinPeer(path string, _ *source, _ *listen.SocketFile) (string, *os.File, error) {
	return path, nil, nil
}

// passCred does nothing: without pinPeer's checks there is no use for the
// senders' credentials.
func passCred(int) error { return nil }

// credsPassed says that datagrams come with no credentials here.
const credsPassed = false
