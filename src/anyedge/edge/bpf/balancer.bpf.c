// SPDX-License-Identifier: Apache-2.0
/* The layer-4 load balancer (Unimog, in the BPF edge post): every server of a data
 * centre runs this XDP program on the interface that faces the routers.  ECMP from the
 * router lands a packet on any server; the program sends it on to the server that the
 * bucket table names for its flow.
 *
 * The program holds no policy; user space (anyedge.edge.balancer) fills the maps:
 *
 *   lb_services  the service (anycast) addresses; other traffic passes untouched
 *   lb_table     array-of-maps, one entry: the bucket array in force (lb_buckets0 or
 *                lb_buckets1, 2^16 buckets of {first hop, second hop})
 *   lb_servers   server index -> its MAC address (and an ifindex to redirect to)
 *   lb_peers     MAC address -> server index: recognises packets from other servers
 *   lb_config    this server's index, the hash seed, flags
 *   lb_stats     per-CPU packets and bytes per (kind, server)
 *   lb_debug     the last service packet's hash, bucket and fate (debug mode only)
 *
 * The flow hash is anyedge.balance.flowhash.flow_hash: the kernel's jhash_3words on
 * (source address, destination address, source port << 16 | destination port), all in
 * host byte order, with initval seed ^ protocol; an IPv6 address is first folded into
 * one word by XOR of its four (fold6).  The bucket is the hash's low 16 bits.
 *
 * What a server does with a service packet for bucket b = (first F, second S):
 *
 *   - it is not F: rewrite the destination MAC to F's, the source MAC to its own, and
 *     send it back out (XDP_TX; bpf_redirect when F's entry names another interface);
 *   - it is F: keep it (XDP_PASS) unless it is TCP without SYN, has no socket here
 *     (bpf_skc_lookup_tcp finds no established, request or time-wait socket; a
 *     listener does not count, except for the last ACK of a handshake it answered
 *     with a SYN cookie), S is another server and second hops are on: then the packet
 *     belongs to a connection that S accepted before b moved, and goes to S.
 *
 * A packet that came from another server (its source MAC is in lb_peers) is sent on
 * only by its bucket's first hop, and only to the second hop.  The first hop marks
 * what it sends to the second: the source MAC is its own with the locally
 * administered bit (0x02 of the first byte) flipped, an address lb_peers also knows,
 * flagged LB_PEER_SECOND; a marked packet is never sent on.  So a packet makes at most
 * two hops (any server -> first hop -> second hop), even while servers hold different
 * tables.  No tunnel: the packet keeps its IP header; every server holds the service
 * addresses, and the servers share one L2 segment.
 */
#include "parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define LB_BUCKETS (1 << 16)
#define LB_MAX_SERVERS 256
#define LB_NONE 0xFFFFFFFF

#define LB_F_SECOND_HOP 0x1 /* forward unknown non-SYN TCP to the second hop */
#define LB_F_DEBUG 0x2      /* record the last service packet in lb_debug */
#define LB_F_TABLE 0x4      /* a table is in force (until then every packet passes) */

#define LB_PEER_SECOND 0x80000000 /* lb_peers: the MAC a first hop sends to seconds from */
#define LB_MAC_MARK 0x02          /* flipped in byte 0 of that MAC */

#define TCP_SYN 0x02
#define BPF_TCP_LISTEN_STATE 10

/* Counter kinds: lb_stats[kind * LB_MAX_SERVERS + server]. */
#define LB_STAT_FIRST 0  /* sent to server as the bucket's first hop */
#define LB_STAT_SECOND 1 /* sent to server as the bucket's second hop */
#define LB_STAT_LOCAL 2  /* passed up the local stack (server = this one) */
#define LB_STAT_NO_MAC 3 /* the bucket named a server without a MAC: passed up */
#define LB_STAT_KINDS 4

/* Debug actions, in lb_debug.action. */
#define LB_ACT_LOCAL 0
#define LB_ACT_FIRST 1
#define LB_ACT_SECOND 2
#define LB_ACT_NO_MAC 3

struct lb_bucket {
	__u32 first;
	__u32 second; /* LB_NONE when none */
};

struct lb_server {
	__u8 mac[6];
	__u8 present; /* 1 when this index names a server */
	__u8 pad;
	__u32 ifindex; /* 0: the segment the packet came in on (XDP_TX) */
};

struct lb_config {
	__u32 self; /* this server's index */
	__u32 seed; /* flow hash seed (XORed with the protocol) */
	__u32 flags;
	__u32 pad;
};

struct lb_service {
	__u8 addr[16]; /* IPv4 in the first four bytes, the rest zero */
	__u32 family;  /* 4 or 6 */
};

struct lb_stat {
	__u64 packets;
	__u64 bytes;
};

struct lb_debug {
	__u32 hash;
	__u32 bucket;
	__u32 first;
	__u32 second;
	__u32 action; /* LB_ACT_* */
	__u32 from;   /* the server the packet came from, LB_NONE for the router */
	__u32 marked; /* 1 when it came from a first hop, for us as second hop */
};

struct lb_bucket_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_BUCKETS);
	__type(key, __u32);
	__type(value, struct lb_bucket);
};

struct lb_bucket_map lb_buckets0 SEC(".maps");
struct lb_bucket_map lb_buckets1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct lb_bucket_map);
} lb_table SEC(".maps") = {
	.values = {[0] = &lb_buckets0},
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_SERVERS);
	__type(key, __u32);
	__type(value, struct lb_server);
} lb_servers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_SERVERS);
	__type(key, __u64); /* the MAC in the first six bytes, then zeros */
	__type(value, __u32); /* server index, | LB_PEER_SECOND for its marked MAC */
} lb_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct lb_service);
	__type(value, __u32);
} lb_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_config);
} lb_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_STAT_KINDS * LB_MAX_SERVERS);
	__type(key, __u32);
	__type(value, struct lb_stat);
} lb_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_debug);
} lb_debug SEC(".maps");

static __always_inline __u32 rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> ((-shift) & 31));
}

/* The kernel's jhash_3words (include/linux/jhash.h), word for word. */
static __always_inline __u32 ae_jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	initval += 0xdeadbeef + (3 << 2);
	a += initval;
	b += initval;
	c += initval;
	c ^= b; c -= rol32(b, 14);
	a ^= c; a -= rol32(c, 11);
	b ^= a; b -= rol32(a, 25);
	c ^= b; c -= rol32(b, 16);
	a ^= c; a -= rol32(c, 4);
	b ^= a; b -= rol32(a, 14);
	c ^= b; c -= rol32(b, 24);
	return c;
}

static __always_inline __u32 addr_word(const __u64 *addr, int family)
{
	const __u32 *w = (const __u32 *)addr;

	if (family == 4)
		return bpf_ntohl(w[0]);
	return bpf_ntohl(w[0] ^ w[1] ^ w[2] ^ w[3]); /* fold6 */
}

static __always_inline __u32 flow_hash(const struct pkt *p, __u32 seed)
{
	return ae_jhash_3words(addr_word(p->src, p->family), addr_word(p->dst, p->family),
			       ((__u32)p->sport << 16) | p->dport, seed ^ p->proto);
}

static __always_inline void count(__u32 kind, __u32 server, __u64 bytes)
{
	__u32 key = kind * LB_MAX_SERVERS + (server & (LB_MAX_SERVERS - 1));
	struct lb_stat *st = bpf_map_lookup_elem(&lb_stats, &key);

	if (st) {
		st->packets++;
		st->bytes += bytes;
	}
}

/* 1 when the packet is the last ACK of a handshake that a listener here answered with
 * a SYN cookie (it has no request socket to find): only while the listener sends
 * cookies (SYN queue overflowed recently, or net.ipv4.tcp_syncookies = 2). */
static __always_inline int syncookie_ok(struct xdp_md *ctx, const struct pkt *p,
					struct bpf_sock *sk)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct tcphdr *th = data + (p->l4_off & 0x1ff);

	if ((void *)(th + 1) > data_end)
		return 0;
	if (p->family == 4) {
		struct iphdr *ip = data + (p->l3_off & 0x3f);
		if ((void *)(ip + 1) > data_end)
			return 0;
		return bpf_tcp_check_syncookie(sk, ip, sizeof(*ip), th, sizeof(*th)) == 0;
	} else {
		struct ipv6hdr *ip6 = data + (p->l3_off & 0x3f);
		if ((void *)(ip6 + 1) > data_end)
			return 0;
		return bpf_tcp_check_syncookie(sk, ip6, sizeof(*ip6), th, sizeof(*th)) == 0;
	}
}

/* 1 when a TCP socket here (established, being accepted or in time-wait) owns the
 * packet's flow, or the packet completes a handshake a listener here answered with a
 * SYN cookie; a listener alone does not. */
static __always_inline int has_socket(struct xdp_md *ctx, const struct pkt *p)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 size;
	int owned;

	if (p->family == 4) {
		__builtin_memcpy(&t.ipv4.saddr, p->src, 4);
		__builtin_memcpy(&t.ipv4.daddr, p->dst, 4);
		t.ipv4.sport = bpf_htons(p->sport);
		t.ipv4.dport = bpf_htons(p->dport);
		size = sizeof(t.ipv4);
	} else {
		__builtin_memcpy(t.ipv6.saddr, p->src, 16);
		__builtin_memcpy(t.ipv6.daddr, p->dst, 16);
		t.ipv6.sport = bpf_htons(p->sport);
		t.ipv6.dport = bpf_htons(p->dport);
		size = sizeof(t.ipv6);
	}
	sk = bpf_skc_lookup_tcp(ctx, &t, size, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	owned = sk->state != BPF_TCP_LISTEN_STATE;
	if (!owned && (p->tcp_flags & 0x16) == 0x10) /* ACK without SYN or RST */
		owned = syncookie_ok(ctx, p, sk);
	bpf_sk_release(sk);
	return owned;
}

/* Send the frame to server `to`: its MAC as destination, ours as source (marked when
 * the packet goes to a second hop). */
static __always_inline int forward(struct xdp_md *ctx, const struct lb_server *to,
				   const struct lb_server *me, int mark)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	__builtin_memcpy(eth->h_dest, to->mac, 6);
	__builtin_memcpy(eth->h_source, me->mac, 6);
	if (mark)
		eth->h_source[0] ^= LB_MAC_MARK;
	if (to->ifindex && to->ifindex != ctx->ingress_ifindex)
		return bpf_redirect(to->ifindex, 0);
	return XDP_TX;
}

SEC("xdp")
int balancer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = data_end - data;
	struct lb_service svc = {};
	struct lb_config *cfg;
	struct lb_bucket *b;
	struct lb_server *to, *me;
	struct pkt p = {};
	__u32 zero = 0, hash, bucket, first, second, from = LB_NONE, marked = 0, action;
	__u64 src_mac = 0;
	__u32 *peer;
	void *inner;
	int verdict;

	if (parse_packet(ctx, &p) < 0 || !p.has_l4)
		return XDP_PASS;
	if (p.proto != PROTO_TCP && p.proto != PROTO_UDP)
		return XDP_PASS;
	__builtin_memcpy(svc.addr, p.dst, 16);
	svc.family = p.family;
	if (!bpf_map_lookup_elem(&lb_services, &svc))
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&lb_config, &zero);
	inner = bpf_map_lookup_elem(&lb_table, &zero);
	if (!cfg || !inner || !(cfg->flags & LB_F_TABLE))
		return XDP_PASS;

	hash = flow_hash(&p, cfg->seed);
	bucket = hash & (LB_BUCKETS - 1);
	b = bpf_map_lookup_elem(inner, &bucket);
	if (!b)
		return XDP_PASS;
	first = b->first;
	second = b->second;

	if ((void *)((struct ethhdr *)data + 1) > data_end)
		return XDP_PASS;
	__builtin_memcpy(&src_mac, ((struct ethhdr *)data)->h_source, 6);
	peer = bpf_map_lookup_elem(&lb_peers, &src_mac);
	if (peer && (*peer & ~LB_PEER_SECOND) != cfg->self) {
		from = *peer & ~LB_PEER_SECOND;
		marked = !!(*peer & LB_PEER_SECOND);
	}

	me = bpf_map_lookup_elem(&lb_servers, &cfg->self);
	action = LB_ACT_LOCAL;
	to = 0;
	if (first != cfg->self) {
		/* Not ours: to the first hop, unless another server sent it here (then we
		 * are its second hop, or tables disagree for a moment: keep it). */
		if (from == LB_NONE) {
			action = LB_ACT_FIRST;
			to = bpf_map_lookup_elem(&lb_servers, &first);
		}
	} else if (!marked && (cfg->flags & LB_F_SECOND_HOP) && second != LB_NONE &&
		   second != cfg->self && p.proto == PROTO_TCP &&
		   !(p.tcp_flags & TCP_SYN) && !has_socket(ctx, &p)) {
		action = LB_ACT_SECOND;
		to = bpf_map_lookup_elem(&lb_servers, &second);
	}

	if (action != LB_ACT_LOCAL && (!to || !to->present || !me || !me->present))
		action = LB_ACT_NO_MAC;
	if (action == LB_ACT_FIRST || action == LB_ACT_SECOND) {
		count(action == LB_ACT_FIRST ? LB_STAT_FIRST : LB_STAT_SECOND,
		      action == LB_ACT_FIRST ? first : second, bytes);
		verdict = forward(ctx, to, me, action == LB_ACT_SECOND);
	} else {
		if (action == LB_ACT_NO_MAC)
			count(LB_STAT_NO_MAC, first == cfg->self ? second : first, bytes);
		else
			count(LB_STAT_LOCAL, cfg->self, bytes);
		verdict = XDP_PASS;
	}

	if (cfg->flags & LB_F_DEBUG) {
		struct lb_debug *d = bpf_map_lookup_elem(&lb_debug, &zero);
		if (d) {
			d->hash = hash;
			d->bucket = bucket;
			d->first = first;
			d->second = second;
			d->action = action;
			d->from = from;
			d->marked = marked;
		}
	}
	return verdict;
}
