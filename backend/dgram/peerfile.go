package dgram

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// savePeers writes the addresses of the unixgram peers sent to from
// sockets of their own (unconnected ones, as QEMU's; see ownSocket) to
// Config.PeerFile, one quoted address a line, for the next listener at
// this address to restore. A peer connected to the listener's socket
// (vfkit, vz) is not kept: it will not take datagrams from the next one.
func (l *Listener) savePeers(peers map[peerKey]*peer) {
	if l.cfg.PeerFile == "" || l.ux == nil {
		return
	}
	var b bytes.Buffer
	n := 0
	for k, p := range peers {
		if p.own != nil && !p.dead.Load() {
			b.WriteString(strconv.Quote(k.String()) + "\n")
			n++
		}
	}
	if n == 0 {
		return
	}
	if err := writePeerFile(l.cfg.PeerFile, b.Bytes()); err != nil {
		l.log.WithError(err).Warn("cannot keep the peers for the next start: they are reached again when they send")
		return
	}
	l.log.WithFields(logrus.Fields{"file": l.cfg.PeerFile, "peers": n}).Info("peers kept for the next start")
}

func writePeerFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path) // CreateTemp made it 0600
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// restorePeers adds the peers a previous listener at this address kept in
// Config.PeerFile (see savePeers) and removes the file, so that a VM that
// has not sent anything since the switch restarted is reached. A peer is
// added only if its socket still takes datagrams from a socket of the
// switch's, and only as a datagram from it would be added now: the owner
// of its socket file stands for the sender (--allow-uid, pinning). The
// file is read only if this process wrote it (owned by its user, writable
// by nobody else): anyone who could plant one could otherwise have the
// switch send its floods to sockets of their choosing.
func (l *Listener) restorePeers() {
	path := l.cfg.PeerFile
	if path == "" || l.ux == nil {
		return
	}
	data, err := readPeerFile(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			l.log.WithError(err).Warn("peers of the last run not restored")
		}
		return
	}
	now := int64(time.Since(l.epoch))
	restored, left := 0, 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		addr, err := strconv.Unquote(sc.Text())
		if err != nil || addr == "" {
			continue
		}
		src, ok := restoredSource(addr)
		if !ok || !l.admits(&src) || !takesDatagrams(addr) {
			left++ // gone, or not one this listener would take now
			continue
		}
		if l.peer(&src, nil, now, true) != nil {
			restored++
		}
	}
	l.log.WithFields(logrus.Fields{"restored": restored, "left_out": left}).Info("peers of the last run restored")
}

// readPeerFile reads and removes the peer file at path, which must be a
// regular file of this process's user that nobody else may write.
func readPeerFile(path string) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	defer os.Remove(path)
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.Mode().IsRegular() || !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("%s: not a file of this user's that only it may write: ignored", path)
	}
	return os.ReadFile(path)
}

// restoredSource returns the source a datagram from addr (a path, or
// "@name" for an abstract address) would have, with the owner of the
// socket file for its sender's credentials.
func restoredSource(addr string) (source, bool) {
	if addr[0] == '@' {
		// No file, no owner: admitted only where no allow list applies.
		return source{path: append([]byte{0}, addr[1:]...)}, true
	}
	fi, err := os.Lstat(addr)
	if err != nil || fi.Mode().Type() != fs.ModeSocket {
		return source{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return source{}, false
	}
	return source{path: []byte(addr), uid: st.Uid, gid: st.Gid, cred: credsPassed}, true
}

// takesDatagrams reports whether the socket at addr takes datagrams from a
// socket of the switch's: it is there, and not connected to another (a
// vfkit or vz peer of the last switch, which is gone).
func takesDatagrams(addr string) bool { return connectTo(addr) == nil }
