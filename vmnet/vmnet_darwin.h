// The C half of the macOS host interface (vmnet_darwin.c), as the Go half
// (vmnet_darwin.go) sees it: plain C types only, no vmnet, xpc or dispatch
// types, so that internal/cgocheck can compare every C.name the Go code
// uses with the declarations below (arity included).

#ifndef TAPSWITCH_VMNET_DARWIN_H
#define TAPSWITCH_VMNET_DARWIN_H

#include <stddef.h>
#include <stdint.h>

// TSVMNET_UNKNOWN_KEY is returned by the tsvmnet_desc_set_* functions for a
// key symbol that the running macOS does not export.
#define TSVMNET_UNKNOWN_KEY 1

// tsvmnet_info is what vmnet reported when the interface started
// (interface_param). Absent keys leave zeros and empty strings.
struct tsvmnet_info {
	uint64_t mtu;
	uint64_t max_packet_size;
	uint64_t read_max_packets;  // macOS 15+
	uint64_t write_max_packets; // macOS 15+
	char mac[32];
	char start_address[48];
	char end_address[48];
	char subnet_mask[48];
	uint8_t interface_id[16];
};

// tsvmnet_bufs are the packet buffers of a started interface: batch
// buffers of pktsize bytes each for reads and as many for writes, laid
// end to end, and the length of each packet.
struct tsvmnet_bufs {
	uint8_t *rmem;
	uint8_t *wmem;
	uint64_t *rsizes;
	uint64_t *wsizes;
};

struct tsvmnet;

// The interface description: an xpc dictionary. Keys are named by their
// symbol in vmnet.h (e.g. "vmnet_operation_mode_key") and looked up with
// dlsym; the setters return 0, or TSVMNET_UNKNOWN_KEY.
void *tsvmnet_desc_new(void);
void tsvmnet_desc_free(void *desc);
int tsvmnet_desc_set_uint64(void *desc, const char *keysym, uint64_t value);
int tsvmnet_desc_set_string(void *desc, const char *keysym, const char *value);
int tsvmnet_desc_set_uuid(void *desc, const char *keysym, const uint8_t *uuid);

// tsvmnet_start starts an interface (vmnet_start_interface) and waits for
// it, fills *info, and makes every VMNET_INTERFACE_PACKETS_AVAILABLE event
// write one byte to wakefd (non-blocking; a full pipe already holds a
// wakeup). It returns a vmnet_return_t; *out is set on VMNET_SUCCESS only.
uint32_t tsvmnet_start(void *desc, int wakefd, struct tsvmnet_info *info, struct tsvmnet **out);

// tsvmnet_alloc allocates the packet buffers: 0, or -1 if out of memory.
int tsvmnet_alloc(struct tsvmnet *h, int batch, size_t pktsize, struct tsvmnet_bufs *bufs);

// tsvmnet_read reads up to n packets into the read buffers (vmnet_read),
// storing their lengths in rsizes and their number in *count.
uint32_t tsvmnet_read(struct tsvmnet *h, int n, int *count);

// tsvmnet_write writes the first n packets of the write buffers, of the
// lengths in wsizes (vmnet_write), storing the number written in *count.
uint32_t tsvmnet_write(struct tsvmnet *h, int n, int *count);

// tsvmnet_stop turns the events off, stops the interface
// (vmnet_stop_interface) and waits until no event callback can run any
// more, so that wakefd may be closed. tsvmnet_free then frees h.
uint32_t tsvmnet_stop(struct tsvmnet *h);
void tsvmnet_free(struct tsvmnet *h);

#endif
