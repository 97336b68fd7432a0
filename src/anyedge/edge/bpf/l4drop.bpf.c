// SPDX-License-Identifier: Apache-2.0
/* L4Drop: volumetric DoS mitigation in XDP, the first stage of the edge's packet path.
 *
 * The program holds no policy.  Rules live in maps that user space fills
 * (anyedge.edge.l4drop): each rule matches a packet on its family, protocol, source
 * and destination prefix, source and destination port range, TCP flags under a mask,
 * IP length range and up to 16 payload bytes under a mask at an offset into the
 * transport payload (a "packet signature").  The first rule that matches decides: DROP
 * or PASS, and its per-CPU counter (packets, bytes) goes up.  No rule matching: PASS.
 *
 * Two rule sets exist, l4drop_set0 and l4drop_set1.  The one in force is the single
 * entry of the map-in-map l4drop_active.  User space writes the other set, then points
 * l4drop_active at it: one pointer store, seen whole by every packet, and the update
 * returns only after every program still running on the old set has finished (the
 * kernel waits an RCU grace period on map-in-map updates), so the old set may then be
 * rewritten.  No packet ever sees half a rule set.
 *
 * What L4Drop passes goes on to the next stage of the packet path when user space has
 * put one in l4drop_next (a program array of one slot): a tail call, as the post
 * chains its XDP programs, so a server's L4Drop can sit in front of its load balancer
 * on one interface.  With the slot empty the tail call fails and the packet passes up
 * the stack.
 */
#include "parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define L4DROP_MAX_RULES 64
#define L4DROP_SIG_MAX 16

#define L4DROP_NEED_L4 0x01   /* the rule reads ports, flags or payload */
#define L4DROP_ACTION_DROP 1
#define L4DROP_ACTION_PASS 2

/* One rule; the Python side (anyedge.edge.l4drop.Rule) mirrors this layout exactly. */
struct l4drop_rule {
	__u64 src[2];       /* source network, already masked, network byte order */
	__u64 src_mask[2];
	__u64 dst[2];
	__u64 dst_mask[2];
	__u8 sig[L4DROP_SIG_MAX]; /* payload bytes, already masked */
	__u8 sig_mask[L4DROP_SIG_MAX];
	__u16 sport_min, sport_max; /* host byte order, inclusive */
	__u16 dport_min, dport_max;
	__u16 len_min, len_max;     /* IP length, inclusive */
	__u16 sig_offset;           /* from the start of the transport payload */
	__u8 family;                /* 0 any, 4, 6 */
	__u8 proto;                 /* 0 any */
	__u8 tcp_flags_mask;
	__u8 tcp_flags_value;
	__u8 sig_len;               /* 0: no signature */
	__u8 flags;                 /* L4DROP_NEED_L4 */
	__u8 action;                /* L4DROP_ACTION_* */
	__u8 pad[3];
};

struct l4drop_set {
	__u32 id;    /* 0 or 1: which half of l4drop_stats this set counts into */
	__u32 count; /* rules in force, from the front of rules[] */
	struct l4drop_rule rules[L4DROP_MAX_RULES];
};

struct l4drop_stat {
	__u64 packets;
	__u64 bytes; /* frame bytes as XDP sees them, Ethernet header included */
};

struct l4drop_set_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct l4drop_set);
};

struct l4drop_set_map l4drop_set0 SEC(".maps");
struct l4drop_set_map l4drop_set1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct l4drop_set_map);
} l4drop_active SEC(".maps") = {
	.values = {[0] = &l4drop_set0},
};

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} l4drop_next SEC(".maps");

/* Counters of set s's rule i at index s * L4DROP_MAX_RULES + i. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * L4DROP_MAX_RULES);
	__type(key, __u32);
	__type(value, struct l4drop_stat);
} l4drop_stats SEC(".maps");

static __always_inline int in_prefix(const __u64 *addr, const __u64 *net, const __u64 *mask)
{
	return ((addr[0] & mask[0]) == net[0]) & ((addr[1] & mask[1]) == net[1]);
}

static __always_inline int payload_matches(struct xdp_md *ctx, const struct l4drop_rule *r,
					   const struct pkt *p)
{
	__u64 buf[L4DROP_SIG_MAX / 8] = {};
	const __u64 *sig = (const __u64 *)r->sig;
	const __u64 *mask = (const __u64 *)r->sig_mask;
	__u32 len = r->sig_len;

	if (len > L4DROP_SIG_MAX)
		return 0;
	/* Reads past the end of the packet fail: too short to carry the signature. */
	if (bpf_xdp_load_bytes(ctx, p->payload_off + r->sig_offset, buf, len) < 0)
		return 0;
	return ((buf[0] & mask[0]) == sig[0]) & ((buf[1] & mask[1]) == sig[1]);
}

static __always_inline int rule_matches(struct xdp_md *ctx, const struct l4drop_rule *r,
					const struct pkt *p)
{
	if (r->family && r->family != p->family)
		return 0;
	if (r->proto && r->proto != p->proto)
		return 0;
	if (!in_prefix(p->src, r->src, r->src_mask) || !in_prefix(p->dst, r->dst, r->dst_mask))
		return 0;
	if (p->ip_len < r->len_min || p->ip_len > r->len_max)
		return 0;
	if (!(r->flags & L4DROP_NEED_L4))
		return 1;
	if (!p->has_l4)
		return 0;
	if (p->sport < r->sport_min || p->sport > r->sport_max)
		return 0;
	if (p->dport < r->dport_min || p->dport > r->dport_max)
		return 0;
	if ((p->tcp_flags & r->tcp_flags_mask) != r->tcp_flags_value)
		return 0;
	if (r->sig_len && !payload_matches(ctx, r, p))
		return 0;
	return 1;
}

/* Hand a passed packet to the next stage, if there is one. */
static __always_inline int pass(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &l4drop_next, 0);
	return XDP_PASS;
}

SEC("xdp")
int l4drop(struct xdp_md *ctx)
{
	struct pkt p = {};
	struct l4drop_set *set;
	__u32 zero = 0;
	void *inner;

	if (parse_packet(ctx, &p) < 0)
		return pass(ctx);
	inner = bpf_map_lookup_elem(&l4drop_active, &zero);
	if (!inner)
		return pass(ctx);
	set = bpf_map_lookup_elem(inner, &zero);
	if (!set)
		return pass(ctx);

	for (__u32 i = 0; i < L4DROP_MAX_RULES; i++) {
		struct l4drop_rule *r;
		struct l4drop_stat *st;
		__u32 slot;

		if (i >= set->count)
			break;
		r = &set->rules[i];
		if (!rule_matches(ctx, r, &p))
			continue;
		slot = (set->id & 1) * L4DROP_MAX_RULES + i;
		st = bpf_map_lookup_elem(&l4drop_stats, &slot);
		if (st) {
			st->packets++;
			st->bytes += ctx->data_end - ctx->data;
		}
		return r->action == L4DROP_ACTION_PASS ? pass(ctx) : XDP_DROP;
	}
	return pass(ctx);
}
