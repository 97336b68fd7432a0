// SPDX-License-Identifier: Apache-2.0
/* Socket dispatch with sk_lookup: one socket serves a range of addresses and ports.
 *
 * The program runs in the network namespace it is attached to, each time the kernel
 * looks for the socket of a TCP SYN or a UDP datagram (before the listener and bound
 * socket lookup).  It holds no policy.  User space (anyedge.edge.dispatch) writes:
 *
 *   - a set of ranges, each (family, protocol, destination prefix, destination port
 *     range) -> service id, tried in order, the first match wins;
 *   - skd_sockets, a SOCKMAP of service id -> socket (a listening TCP socket or an
 *     unconnected UDP socket, bound anywhere, 127.0.0.1:9000 say).
 *
 * A lookup whose destination matches a range gets that service's socket with
 * bpf_sk_assign.  A lookup that matches no range, or whose service has no socket
 * registered (or one the kernel will not take: wrong protocol, not listening), goes on
 * to the kernel's ordinary lookup: nothing outside the ranges is stolen.
 *
 * Ranges are double-buffered like L4Drop's rules: skd_set0 and skd_set1, the one in
 * force the single entry of skd_active (a map of maps), switched with one update after
 * the other set was written.  No lookup sees half a set.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SKD_MAX_RANGES 64
#define SKD_MAX_SERVICES 256
#define AF_INET 2
#define AF_INET6 10

/* One range; anyedge.edge.dispatch.RangeRecord mirrors this layout exactly. */
struct skd_range {
	__u64 addr[2];     /* network, already masked, network byte order */
	__u64 mask[2];
	__u16 port_min;    /* host byte order, inclusive */
	__u16 port_max;
	__u32 service;     /* key into skd_sockets */
	__u8 family;       /* AF_INET or AF_INET6 */
	__u8 proto;        /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad[6];
};

struct skd_set {
	__u32 count;
	__u32 pad;
	struct skd_range ranges[SKD_MAX_RANGES];
};

/* Per service, per CPU: what became of the lookups its ranges matched. */
struct skd_stat {
	__u64 assigned;  /* the service's socket took it */
	__u64 missing;   /* no socket registered: ordinary lookup */
	__u64 refused;   /* bpf_sk_assign said no (wrong protocol, not listening) */
};

struct skd_set_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct skd_set);
};

struct skd_set_map skd_set0 SEC(".maps");
struct skd_set_map skd_set1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct skd_set_map);
} skd_active SEC(".maps") = {
	.values = {[0] = &skd_set0},
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, SKD_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u64);
} skd_sockets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SKD_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct skd_stat);
} skd_stats SEC(".maps");

static __always_inline int range_matches(const struct skd_range *r, __u8 family, __u8 proto,
					 const __u64 *addr, __u16 port)
{
	if (r->family != family || r->proto != proto)
		return 0;
	if (port < r->port_min || port > r->port_max)
		return 0;
	return ((addr[0] & r->mask[0]) == r->addr[0]) & ((addr[1] & r->mask[1]) == r->addr[1]);
}

SEC("sk_lookup")
int sk_dispatch(struct bpf_sk_lookup *ctx)
{
	__u64 addr[2] = {};
	struct skd_set *set;
	struct skd_stat *stat;
	struct bpf_sock *sk;
	__u32 zero = 0, i, service;
	__u16 port = (__u16)ctx->local_port; /* host byte order */
	__u8 family = (__u8)ctx->family, proto = (__u8)ctx->protocol;
	void *inner;
	long err;

	/* every context field read once, at its own offset (the verifier refuses a read
	 * through a context pointer the compiler has moved) */
	__u32 a4 = *(volatile __u32 *)&ctx->local_ip4;
	__u32 a6[4] = {
		*(volatile __u32 *)&ctx->local_ip6[0], *(volatile __u32 *)&ctx->local_ip6[1],
		*(volatile __u32 *)&ctx->local_ip6[2], *(volatile __u32 *)&ctx->local_ip6[3],
	};

	if (family == AF_INET)
		__builtin_memcpy(addr, &a4, 4);
	else if (family == AF_INET6)
		__builtin_memcpy(addr, a6, 16);
	else
		return SK_PASS;
	inner = bpf_map_lookup_elem(&skd_active, &zero);
	if (!inner)
		return SK_PASS;
	set = bpf_map_lookup_elem(inner, &zero);
	if (!set)
		return SK_PASS;
	for (i = 0; i < SKD_MAX_RANGES; i++) {
		if (i >= set->count)
			return SK_PASS;
		if (range_matches(&set->ranges[i], family, proto, addr, port))
			break;
	}
	if (i >= SKD_MAX_RANGES)
		return SK_PASS;
	service = set->ranges[i].service;
	stat = bpf_map_lookup_elem(&skd_stats, &service);
	sk = bpf_map_lookup_elem(&skd_sockets, &service);
	if (!sk) {
		if (stat)
			stat->missing++;
		return SK_PASS;
	}
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (stat) {
		if (err)
			stat->refused++;
		else
			stat->assigned++;
	}
	return SK_PASS;
}
