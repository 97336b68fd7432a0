// SPDX-License-Identifier: Apache-2.0
/* UDP rate limits on a socket: a socket filter attached with SO_ATTACH_BPF.
 *
 * The BPF edge post's last kernel-side DoS layer: when a flood gets past XDP and
 * iptables, one socket serves many addresses, and a flood from one source must not
 * crowd everyone else out of its receive queue.  The program runs on every datagram
 * before it is queued on the socket, and keeps one token bucket per source address in
 * an LRU hash: a datagram takes a token and is kept, or finds the bucket empty and is
 * dropped (return 0) before it costs the socket any buffer.
 *
 * Buckets refill at udl_config.rate datagrams per second up to udl_config.burst,
 * measured with bpf_ktime_get_ns; a new source starts with a full bucket.  Tokens are
 * kept in billionths so that a refill is exact in integers.  Two CPUs may take tokens
 * from one source at once; the post names the want of concurrency primitives as what
 * made race-free token buckets hard.  bpf_spin_lock is not allowed in an LRU map, so
 * the bucket is updated with atomic instructions instead: one CPU wins the
 * compare-and-swap of last_ns and adds that interval's refill, and a token is taken
 * with a compare-and-swap of tokens, so no token is spent twice nor lost.  Counters:
 * per outcome, per CPU (udl_stats), and per source in its bucket (kept, dropped,
 * atomic adds), read by user space for the top sources.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define NANO 1000000000ULL
#define UDL_MAX_SOURCES 65536
#define UDL_TRIES 16  /* compare-and-swap attempts before a contended datagram is dropped */

#define UDL_KEPT 0    /* a token taken, the datagram queued */
#define UDL_DROPPED 1 /* over the limit */
#define UDL_OTHER 2   /* not IPv4 or IPv6, or no room for a bucket: kept, unlimited */
#define UDL_OUTCOMES 3

/* anyedge.edge.udplimit mirrors these three structs exactly. */
struct udl_config {
	__u64 rate;  /* datagrams per second per source; 0: no refill */
	__u64 burst; /* bucket size, datagrams */
};

struct udl_source {
	__u32 family; /* 4 or 6 */
	__u8 addr[16]; /* IPv4 in the first four bytes, rest zero */
};

struct udl_bucket {
	__u64 tokens;  /* billionths of a datagram */
	__u64 last_ns; /* when tokens was last brought up to date */
	__u64 kept;
	__u64 dropped;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct udl_config);
} udl_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, UDL_MAX_SOURCES);
	__type(key, struct udl_source);
	__type(value, struct udl_bucket);
} udl_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, UDL_OUTCOMES);
	__type(key, __u32);
	__type(value, __u64);
} udl_stats SEC(".maps");

static __always_inline void count(__u32 outcome)
{
	__u64 *n = bpf_map_lookup_elem(&udl_stats, &outcome);

	if (n)
		*n += 1;
}

/* The source address, read from the IP header in front of the UDP header. */
static __always_inline int source_of(struct __sk_buff *skb, struct udl_source *src)
{
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		src->family = 4;
		return bpf_skb_load_bytes_relative(skb, 12, src->addr, 4, BPF_HDR_START_NET);
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		src->family = 6;
		return bpf_skb_load_bytes_relative(skb, 8, src->addr, 16, BPF_HDR_START_NET);
	}
	return -1;
}

SEC("socket")
int udp_limit(struct __sk_buff *skb)
{
	struct udl_source src = {};
	struct udl_bucket *b, fresh = {};
	struct udl_config *cfg;
	__u64 now, cap, rate, last, add, t, have;
	__u32 zero = 0, i;
	int keep = 0;

	cfg = bpf_map_lookup_elem(&udl_config, &zero);
	if (!cfg || source_of(skb, &src) < 0) {
		count(UDL_OTHER);
		return skb->len;
	}
	now = bpf_ktime_get_ns();
	cap = cfg->burst * NANO;
	rate = cfg->rate;
	b = bpf_map_lookup_elem(&udl_buckets, &src);
	if (!b) {
		fresh.tokens = cap;
		fresh.last_ns = now;
		bpf_map_update_elem(&udl_buckets, &src, &fresh, BPF_NOEXIST);
		b = bpf_map_lookup_elem(&udl_buckets, &src); /* ours, or another CPU's */
		if (!b) {
			count(UDL_OTHER);
			return skb->len;
		}
	}
	/* refill: the CPU that moves last_ns on adds the interval's tokens, once */
	last = *(volatile __u64 *)&b->last_ns;
	if (rate && now > last && __sync_val_compare_and_swap(&b->last_ns, last, now) == last) {
		/* (now - last) * rate, but never more than a full bucket (no overflow) */
		add = (now - last) < cap / rate + 1 ? (now - last) * rate : cap;
		__sync_fetch_and_add(&b->tokens, add);
	}
	/* take one token of at most a full bucket */
	for (i = 0; i < UDL_TRIES; i++) {
		t = *(volatile __u64 *)&b->tokens;
		have = t < cap ? t : cap;
		if (have < NANO)
			break;
		if (__sync_val_compare_and_swap(&b->tokens, t, have - NANO) == t) {
			keep = 1;
			break;
		}
	}
	if (keep) {
		__sync_fetch_and_add(&b->kept, 1);
		count(UDL_KEPT);
		return skb->len;
	}
	__sync_fetch_and_add(&b->dropped, 1);
	count(UDL_DROPPED);
	return 0;
}
