//go:build darwin && cgo

// The C half of the macOS host interface: everything that touches
// vmnet.framework, xpc and dispatch. Built by cgo as C with Apple's blocks
// extension (clang's default on Darwin). See vmnet_darwin.h for the contract.

#include "vmnet_darwin.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <dispatch/dispatch.h>
#include <vmnet/vmnet.h>
#include <xpc/xpc.h>

struct tsvmnet {
	interface_ref iface;
	dispatch_queue_t queue;
	int batch;
	size_t pktsize;
	struct vmpktdesc *rpkts, *wpkts;
	struct iovec *riov, *wiov;
	uint8_t *rmem, *wmem;
	uint64_t *rsizes, *wsizes;
};

// key returns the string held by the vmnet key symbol sym, or NULL if this
// macOS does not export it. Looking keys up at run time keeps one binary
// working from macOS 11 to the newest, and the build independent of the
// SDK's version (vmnet_read_max_packets_key is macOS 15+, for example).
static const char *key(const char *sym) {
	const char *const *p = dlsym(RTLD_DEFAULT, sym);
	return p != NULL ? *p : NULL;
}

void *tsvmnet_desc_new(void) { return xpc_dictionary_create(NULL, NULL, 0); }

void tsvmnet_desc_free(void *desc) { xpc_release((xpc_object_t)desc); }

int tsvmnet_desc_set_uint64(void *desc, const char *keysym, uint64_t value) {
	const char *k = key(keysym);
	if (k == NULL)
		return TSVMNET_UNKNOWN_KEY;
	xpc_dictionary_set_uint64((xpc_object_t)desc, k, value);
	return 0;
}

int tsvmnet_desc_set_string(void *desc, const char *keysym, const char *value) {
	const char *k = key(keysym);
	if (k == NULL)
		return TSVMNET_UNKNOWN_KEY;
	xpc_dictionary_set_string((xpc_object_t)desc, k, value);
	return 0;
}

int tsvmnet_desc_set_uuid(void *desc, const char *keysym, const uint8_t *uuid) {
	const char *k = key(keysym);
	if (k == NULL)
		return TSVMNET_UNKNOWN_KEY;
	xpc_dictionary_set_uuid((xpc_object_t)desc, k, uuid);
	return 0;
}

static uint64_t get_uint64(xpc_object_t p, const char *keysym) {
	const char *k = key(keysym);
	return k != NULL ? xpc_dictionary_get_uint64(p, k) : 0;
}

static void get_string(char *dst, size_t n, xpc_object_t p, const char *keysym) {
	const char *k = key(keysym);
	const char *s = k != NULL ? xpc_dictionary_get_string(p, k) : NULL;
	if (s != NULL)
		strlcpy(dst, s, n);
}

static void read_info(struct tsvmnet_info *info, xpc_object_t p) {
	info->mtu = get_uint64(p, "vmnet_mtu_key");
	info->max_packet_size = get_uint64(p, "vmnet_max_packet_size_key");
	info->read_max_packets = get_uint64(p, "vmnet_read_max_packets_key");
	info->write_max_packets = get_uint64(p, "vmnet_write_max_packets_key");
	get_string(info->mac, sizeof info->mac, p, "vmnet_mac_address_key");
	get_string(info->start_address, sizeof info->start_address, p, "vmnet_start_address_key");
	get_string(info->end_address, sizeof info->end_address, p, "vmnet_end_address_key");
	get_string(info->subnet_mask, sizeof info->subnet_mask, p, "vmnet_subnet_mask_key");
	const char *k = key("vmnet_interface_id_key");
	const uint8_t *id = k != NULL ? xpc_dictionary_get_uuid(p, k) : NULL;
	if (id != NULL)
		memcpy(info->interface_id, id, sizeof info->interface_id);
}

// wake writes the byte that tells the Go reader packets are waiting. A
// full pipe (EAGAIN) already holds a wakeup the reader has not consumed.
static void wake(int fd) {
	char b = 0;
	while (write(fd, &b, 1) < 0 && errno == EINTR)
		;
}

static vmnet_return_t stop_iface(interface_ref iface, dispatch_queue_t q) {
	dispatch_semaphore_t sem = dispatch_semaphore_create(0);
	__block vmnet_return_t status = VMNET_FAILURE;
	vmnet_return_t r = vmnet_stop_interface(iface, q, ^(vmnet_return_t s) {
	  status = s;
	  dispatch_semaphore_signal(sem);
	});
	if (r != VMNET_SUCCESS) {
		dispatch_release(sem); // the handler was not scheduled
		return r;
	}
	dispatch_semaphore_wait(sem, DISPATCH_TIME_FOREVER);
	dispatch_release(sem);
	return status;
}

uint32_t tsvmnet_start(void *desc, int wakefd, struct tsvmnet_info *info, struct tsvmnet **out) {
	*out = NULL;
	struct tsvmnet *h = calloc(1, sizeof *h);
	if (h == NULL)
		return VMNET_MEM_FAILURE;
	dispatch_queue_t q = dispatch_queue_create("io.tapswitch.vmnet", DISPATCH_QUEUE_SERIAL);
	dispatch_semaphore_t sem = dispatch_semaphore_create(0);
	__block vmnet_return_t status = VMNET_FAILURE;
	__block struct tsvmnet_info got;
	memset(&got, 0, sizeof got);

	interface_ref iface = vmnet_start_interface((xpc_object_t)desc, q, ^(vmnet_return_t s, xpc_object_t param) {
	  status = s;
	  if (s == VMNET_SUCCESS && param != NULL)
		  read_info(&got, param);
	  dispatch_semaphore_signal(sem);
	});
	if (iface == NULL) {
		// As QEMU does, do not wait for a handler that may never run. If it
		// does run, it finds q and sem still there: they are leaked on
		// purpose, on this rare path, rather than freed under it.
		free(h);
		return VMNET_FAILURE;
	}
	dispatch_semaphore_wait(sem, DISPATCH_TIME_FOREVER);
	dispatch_release(sem);
	if (status != VMNET_SUCCESS) {
		dispatch_release(q);
		free(h);
		return status;
	}
	*info = got;

	// The block captures wakefd by value, not h: it never touches memory
	// that tsvmnet_free releases, and tsvmnet_stop waits for it to finish
	// before wakefd may be closed.
	vmnet_return_t r = vmnet_interface_set_event_callback(
	    iface, VMNET_INTERFACE_PACKETS_AVAILABLE, q, ^(interface_event_t events, xpc_object_t event) {
		    (void)event;
		    if (events & VMNET_INTERFACE_PACKETS_AVAILABLE)
			    wake(wakefd);
	    });
	if (r != VMNET_SUCCESS) {
		stop_iface(iface, q);
		dispatch_release(q);
		free(h);
		return r;
	}
	h->iface = iface;
	h->queue = q;
	*out = h;
	return VMNET_SUCCESS;
}

int tsvmnet_alloc(struct tsvmnet *h, int batch, size_t pktsize, struct tsvmnet_bufs *bufs) {
	size_t n = (size_t)batch;
	h->batch = batch;
	h->pktsize = pktsize;
	h->rpkts = calloc(n, sizeof *h->rpkts);
	h->wpkts = calloc(n, sizeof *h->wpkts);
	h->riov = calloc(n, sizeof *h->riov);
	h->wiov = calloc(n, sizeof *h->wiov);
	h->rmem = calloc(n, pktsize);
	h->wmem = calloc(n, pktsize);
	h->rsizes = calloc(n, sizeof *h->rsizes);
	h->wsizes = calloc(n, sizeof *h->wsizes);
	if (!h->rpkts || !h->wpkts || !h->riov || !h->wiov || !h->rmem || !h->wmem || !h->rsizes || !h->wsizes)
		return -1; // tsvmnet_free releases what was allocated
	bufs->rmem = h->rmem;
	bufs->wmem = h->wmem;
	bufs->rsizes = h->rsizes;
	bufs->wsizes = h->wsizes;
	return 0;
}

// vmnet_read and vmnet_write rewrite the descriptors (sizes, flags), so
// they are set up afresh before every call.
static void describe(struct vmpktdesc *pkts, struct iovec *iov, uint8_t *mem, size_t pktsize, const uint64_t *sizes,
                     int n) {
	for (int i = 0; i < n; i++) {
		size_t len = sizes != NULL ? (size_t)sizes[i] : pktsize;
		iov[i].iov_base = mem + (size_t)i * pktsize;
		iov[i].iov_len = len;
		pkts[i].vm_pkt_size = len;
		pkts[i].vm_pkt_iov = &iov[i];
		pkts[i].vm_pkt_iovcnt = 1;
		pkts[i].vm_flags = 0;
	}
}

uint32_t tsvmnet_read(struct tsvmnet *h, int n, int *count) {
	if (n > h->batch)
		n = h->batch;
	describe(h->rpkts, h->riov, h->rmem, h->pktsize, NULL, n);
	int c = n;
	vmnet_return_t r = vmnet_read(h->iface, h->rpkts, &c);
	if (r != VMNET_SUCCESS || c < 0)
		c = 0;
	if (c > n)
		c = n;
	for (int i = 0; i < c; i++)
		h->rsizes[i] = h->rpkts[i].vm_pkt_size;
	*count = c;
	return r;
}

uint32_t tsvmnet_write(struct tsvmnet *h, int n, int *count) {
	if (n > h->batch)
		n = h->batch;
	describe(h->wpkts, h->wiov, h->wmem, h->pktsize, h->wsizes, n);
	int c = n;
	vmnet_return_t r = vmnet_write(h->iface, h->wpkts, &c);
	if (r != VMNET_SUCCESS || c < 0)
		c = 0;
	if (c > n)
		c = n;
	*count = c;
	return r;
}

uint32_t tsvmnet_stop(struct tsvmnet *h) {
	vmnet_interface_set_event_callback(h->iface, VMNET_INTERFACE_PACKETS_AVAILABLE, NULL, NULL);
	vmnet_return_t r = stop_iface(h->iface, h->queue);
	// The queue is serial: once this empty block has run, no event
	// callback is running or queued.
	dispatch_sync(h->queue, ^{
	});
	return r;
}

void tsvmnet_free(struct tsvmnet *h) {
	free(h->rpkts);
	free(h->wpkts);
	free(h->riov);
	free(h->wiov);
	free(h->rmem);
	free(h->wmem);
	free(h->rsizes);
	free(h->wsizes);
	if (h->queue != NULL)
		dispatch_release(h->queue);
	free(h);
}
