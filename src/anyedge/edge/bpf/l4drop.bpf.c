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
 * Rules are not tried one by one.  Three index maps, written by user space with each
 * set, hold for every value of a field the rules that admit it, as a 64-bit mask (bit
 * i: rule i): by family and protocol, by source port and by destination port (a slot
 * past the last port for packets without a transport header).  Their AND is the
 * candidates, usually none; only those are checked in full, lowest index first, so
 * the first rule that matches still decides and a packet no rule's ports admit costs
 * three array lookups whatever the number of rules.  Each index holds two halves, one
 * per set, switched with it.
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

/* The index: masks of the rules admitting a value, set s's half first at s * size. */
#define L4DROP_PROTO_SLOTS 512   /* (family == 6) * 256 + protocol */
#define L4DROP_PORT_SLOTS 65537  /* the port, or 65536: no transport header */
#define L4DROP_NO_L4 65536

/* Memory-mapped (BPF_F_MMAPABLE) so that user space writes a half at memory speed:
 * 65,537 single updates took 0.3 s. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 2 * L4DROP_PROTO_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} l4drop_by_proto SEC(".maps");

struct l4drop_port_index {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 2 * L4DROP_PORT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
};

struct l4drop_port_index l4drop_by_sport SEC(".maps");
struct l4drop_port_index l4drop_by_dport SEC(".maps");

static __always_inline int in_prefix(const __u64 *addr, const __u64 *net, const __u64 *mask)
{
	return ((addr[0] & mask[0]) == net[0]) & ((addr[1] & mask[1]) == net[1]);
}

/* The rule's signature is at its offset into the transport payload, which starts at
 * payload_off.  A global function: the verifier checks it once, not inlined into every
 * step of the loop over the rules (whose states it then could not walk in its limit). */
__noinline int l4drop_payload(struct xdp_md *ctx, const struct l4drop_rule *r, __u32 payload_off)
{
	void *data, *data_end;
	__u64 buf[L4DROP_SIG_MAX / 8] = {};
	const __u64 *sig, *mask;
	__u32 len, off;

	if (!ctx || !r)
		return 0;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	sig = (const __u64 *)r->sig;
	mask = (const __u64 *)r->sig_mask;
	len = r->sig_len;
	off = payload_off + r->sig_offset;
	if (len == 0 || len > L4DROP_SIG_MAX)
		return 0;
	/* Sixteen bytes from there in the frame's linear part: read them in place (the
	 * mask is zero past the signature's length, so what follows it is ignored). */
	if (off < 0x4000) {
		__u64 *at = data + (off & 0x3fff);

		if ((void *)(at + 2) <= data_end)
			return ((at[0] & mask[0]) == sig[0]) & ((at[1] & mask[1]) == sig[1]);
	}
	/* Near the end, or in a later fragment of a multi-buffer frame: copy just the
	 * signature's bytes; a read past the end fails: too short to carry it. */
	if (bpf_xdp_load_bytes(ctx, off, buf, len) < 0)
		return 0;
	return ((buf[0] & mask[0]) == sig[0]) & ((buf[1] & mask[1]) == sig[1]);
}

/* The fields the index did not decide: prefixes, length, TCP flags, payload.  With
 * in_place, a signature within the frame's linear part is read here, inline. */
static __always_inline int rule_matches(struct xdp_md *ctx, const struct l4drop_rule *r,
					const struct pkt *p, int in_place)
{
	if (!in_prefix(p->src, r->src, r->src_mask) || !in_prefix(p->dst, r->dst, r->dst_mask))
		return 0;
	if (p->ip_len < r->len_min || p->ip_len > r->len_max)
		return 0;
	if (!(r->flags & L4DROP_NEED_L4))
		return 1;
	if ((p->tcp_flags & r->tcp_flags_mask) != r->tcp_flags_value)
		return 0;
	if (!r->sig_len)
		return 1;
	if (in_place) {
		__u32 off = p->payload_off + r->sig_offset;
		const __u64 *sig = (const __u64 *)r->sig, *mask = (const __u64 *)r->sig_mask;
		__u64 *at = (void *)(long)ctx->data + (off & 0x3fff);

		if (off < 0x4000 && (void *)(at + 2) <= (void *)(long)ctx->data_end)
			return ((at[0] & mask[0]) == sig[0]) & ((at[1] & mask[1]) == sig[1]);
	}
	return l4drop_payload(ctx, r, p->payload_off);
}

/* The rules whose family, protocol and ports admit the packet: a mask, 0 when none. */
static __always_inline __u64 candidates(__u32 half, const struct pkt *p)
{
	__u32 k = half * L4DROP_PROTO_SLOTS + (p->family == 6) * 256 + p->proto;
	__u64 *m, cand;

	m = bpf_map_lookup_elem(&l4drop_by_proto, &k);
	if (!m || !(cand = *m))
		return 0;
	k = half * L4DROP_PORT_SLOTS + (p->has_l4 ? p->sport : L4DROP_NO_L4);
	m = bpf_map_lookup_elem(&l4drop_by_sport, &k);
	if (!m || !(cand &= *m))
		return 0;
	k = half * L4DROP_PORT_SLOTS + (p->has_l4 ? p->dport : L4DROP_NO_L4);
	m = bpf_map_lookup_elem(&l4drop_by_dport, &k);
	return m ? cand & *m : 0;
}

/* Index of the lowest bit set in x (x != 0), by a de Bruijn sequence: no branches, so
 * the verifier sees one unknown index below 64 rather than a path per bit. */
static const __u8 l4drop_debruijn[64] = {
	0,  1,  48, 2,  57, 49, 28, 3,  61, 58, 50, 42, 38, 29, 17, 4,
	62, 55, 59, 36, 53, 51, 43, 22, 45, 39, 33, 30, 24, 18, 12, 5,
	63, 47, 56, 27, 60, 41, 37, 16, 54, 35, 52, 21, 44, 32, 23, 11,
	46, 26, 40, 15, 34, 20, 31, 10, 25, 14, 19, 9,  13, 8,  7,  6,
};

static __always_inline __u32 lowest_bit(__u64 x)
{
	return l4drop_debruijn[((x & -x) * 0x03f79d71b4cb0a89ULL) >> 58];
}

/* Hand a passed packet to the next stage, if there is one. */
static __always_inline int pass(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &l4drop_next, 0);
	return XDP_PASS;
}

/* Rule i of the set in force matched: count it, and do what it says. */
static __always_inline int decide(struct xdp_md *ctx, const struct l4drop_rule *r, __u32 half,
				  __u32 i)
{
	__u32 slot = half * L4DROP_MAX_RULES + i;
	struct l4drop_stat *st = bpf_map_lookup_elem(&l4drop_stats, &slot);

	if (st) {
		st->packets++;
		st->bytes += ctx->data_end - ctx->data;
	}
	return r->action == L4DROP_ACTION_PASS ? pass(ctx) : XDP_DROP;
}

SEC("xdp")
int l4drop(struct xdp_md *ctx)
{
	struct pkt p = {};
	struct l4drop_set *set;
	__u32 zero = 0, half, first;
	__u64 cand;
	void *inner;

	if (parse_packet(ctx, &p) < 0)
		return pass(ctx);
	inner = bpf_map_lookup_elem(&l4drop_active, &zero);
	if (!inner)
		return pass(ctx);
	set = bpf_map_lookup_elem(inner, &zero);
	if (!set)
		return pass(ctx);
	half = set->id & 1;
	cand = candidates(half, &p);

	if (!cand)
		return pass(ctx);
	/* Usually one rule is a candidate: the first is checked on its own, its signature
	 * read in place, inline; the verifier walks this once, for any index. */
	first = lowest_bit(cand) & (L4DROP_MAX_RULES - 1);
	if (rule_matches(ctx, &set->rules[first], &p, 1))
		return decide(ctx, &set->rules[first], half, first);
	cand &= cand - 1;
	/* The others bit by bit up to the last, the rule's index known at every step: the
	 * verifier walks this as the plain loop over the rules it replaced (a signature
	 * here is read by l4drop_payload, a function it checks once: inline, the loop's
	 * paths were more than it walks). */
	for (__u32 i = 0; i < L4DROP_MAX_RULES; i++) {
		if (!(cand >> i))
			break;
		if (!((cand >> i) & 1))
			continue;
		if (rule_matches(ctx, &set->rules[i], &p, 0))
			return decide(ctx, &set->rules[i], half, i);
	}
	return pass(ctx);
}
