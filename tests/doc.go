// Package tests holds tapswitch's end-to-end tests: the real binary in
// network namespaces the tests create, real taps, real QEMU guests and real
// DHCP clients. They need root (CI runs them as root); run them with
// `make test` or `go test ./tests/`.
package tests
