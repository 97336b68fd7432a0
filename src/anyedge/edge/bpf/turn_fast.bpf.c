// SPDX-License-Identifier: Apache-2.0
/* TURN's kernel fast path: ChannelData relayed in XDP for channels user space has bound
 * (this file), and Send and Data indications for permissions it has installed
 * (turn_indications.h, which frames no channel claims go to).
 *
 * The relay's Python core decides everything (credentials, permissions, channels, quotas)
 * and writes what it decided into two hash maps; this program only looks up and rewrites:
 *
 *   client -> peer: a UDP datagram from a client's 5-tuple to a listener whose payload is
 *   ChannelData of a channel in tf_clients loses its 4-byte ChannelData header and leaves
 *   from the relayed transport address to the peer (bpf_xdp_adjust_head(+4)).
 *
 *   peer -> client: a UDP datagram from a peer to a relayed address that has a bound
 *   channel in tf_peers gains a ChannelData header and leaves from the listener to the
 *   client (bpf_xdp_adjust_head(-4)).
 *
 * Each entry carries a deadline (bpf_ktime_get_ns, CLOCK_MONOTONIC: the earliest of the
 * channel's, its permission's and its allocation's expiry), so a channel stops being relayed here the
 * moment the core would stop relaying it, even before user space deletes the entry; and
 * packet and byte counters (atomic adds) that user space reads back for usage, quotas
 * and metrics.  Anything else -- no entry, past the deadline, IPv4 options, fragments,
 * padded ChannelData, a next hop the kernel's FIB cannot give (a local peer, a neighbour
 * not yet resolved) -- passes to the stack and so to the user-space relay, which is the
 * fallback for every case.
 *
 * Checksums are updated incrementally (bpf_csum_diff over the words that change: the
 * addresses and ports, the UDP length in the pseudo-header and the header, and the 4
 * bytes of ChannelData header taken or added), which is exact when the checksum that
 * came in was; an IPv4 datagram without a UDP checksum (0) leaves without one.  The
 * outgoing frame gets its next hop's MAC addresses from bpf_fib_lookup and leaves by
 * XDP_TX (same interface) or bpf_redirect (another).  IPv4 and IPv6 each have their
 * pair of maps (tf_clients/tf_peers, tf_clients6/tf_peers6); a channel whose client and
 * relayed address differ in family (RFC 8656's ADDITIONAL-ADDRESS-FAMILY) stays in
 * user space, and so does an IPv6 datagram with extension headers or without a UDP
 * checksum.
 */
#include "parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define TF_MAX_CHANNELS 65536
#define AF_INET 2
#define AF_INET6 10
#define IP_DF 0x4000
#define ETH_ALEN 6

#define TF_TO_PEER 0	/* ChannelData relayed to a peer */
#define TF_TO_CLIENT 1	/* a peer's datagram relayed to a client as ChannelData */
#define TF_PASSED 2	/* not ours: to the stack */
#define TF_EXPIRED 3	/* an entry past its deadline: to the stack (user space decides) */
#define TF_NO_ROUTE 4	/* an entry, but no next hop from the FIB: to the stack */
#define TF_SEND_TO_PEER 5	/* a Send indication's DATA relayed to a peer */
#define TF_DATA_TO_CLIENT 6	/* a peer's datagram relayed to a client as a Data indication */
#define TF_OUTCOMES 7
#define TF_INDICATION -1 /* no channel's: fast4/fast6 leave the frame to indication4/6 */

/* anyedge.edge.turnfast mirrors these structs exactly; addresses and ports are in
 * network byte order, the channel number in host order. */
struct tf_client_key {
	__be32 client_ip;
	__be32 server_ip;
	__be16 client_port;
	__be16 server_port;
	__u16 channel;
	__u16 pad;
};

struct tf_client_val {
	__be32 relay_ip;
	__be32 peer_ip;
	__be16 relay_port;
	__be16 peer_port;
	__u32 pad;
	__u64 deadline_ns;
	__u64 packets;
	__u64 bytes; /* payload bytes, as the core counts them */
};

struct tf_peer_key {
	__be32 peer_ip;
	__be32 relay_ip;
	__be16 peer_port;
	__be16 relay_port;
};

struct tf_peer_val {
	__be32 client_ip;
	__be32 server_ip;
	__be16 client_port;
	__be16 server_port;
	__u16 channel;
	__u16 pad;
	__u64 deadline_ns;
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TF_MAX_CHANNELS);
	__type(key, struct tf_client_key);
	__type(value, struct tf_client_val);
} tf_clients SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TF_MAX_CHANNELS);
	__type(key, struct tf_peer_key);
	__type(value, struct tf_peer_val);
} tf_peers SEC(".maps");

/* The same four records for IPv6: 16-byte addresses, the rest as above. */
struct tf_client6_key {
	__u8 client_ip[16];
	__u8 server_ip[16];
	__be16 client_port;
	__be16 server_port;
	__u16 channel;
	__u16 pad;
};

struct tf_client6_val {
	__u8 relay_ip[16];
	__u8 peer_ip[16];
	__be16 relay_port;
	__be16 peer_port;
	__u32 pad;
	__u64 deadline_ns;
	__u64 packets;
	__u64 bytes;
};

struct tf_peer6_key {
	__u8 peer_ip[16];
	__u8 relay_ip[16];
	__be16 peer_port;
	__be16 relay_port;
};

struct tf_peer6_val {
	__u8 client_ip[16];
	__u8 server_ip[16];
	__be16 client_port;
	__be16 server_port;
	__u16 channel;
	__u16 pad;
	__u64 deadline_ns;
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TF_MAX_CHANNELS);
	__type(key, struct tf_client6_key);
	__type(value, struct tf_client6_val);
} tf_clients6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TF_MAX_CHANNELS);
	__type(key, struct tf_peer6_key);
	__type(value, struct tf_peer6_val);
} tf_peers6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TF_OUTCOMES);
	__type(key, __u32);
	__type(value, __u64);
} tf_stats SEC(".maps");

/* A frame's headers, copied out of it and written back: kept apart (not one packed
 * struct) so every word is aligned on the stack. */
struct tf_hdrs {
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
};

#define L3_OFF sizeof(struct ethhdr)
#define L4_OFF (L3_OFF + sizeof(struct iphdr))
#define HDRS_LEN (L4_OFF + sizeof(struct udphdr))

static __always_inline void read_hdrs(void *data, struct tf_hdrs *h)
{
	__builtin_memcpy(&h->eth, data, sizeof(h->eth));
	__builtin_memcpy(&h->ip, data + L3_OFF, sizeof(h->ip));
	__builtin_memcpy(&h->udp, data + L4_OFF, sizeof(h->udp));
}

static __always_inline void write_hdrs(void *data, struct tf_hdrs *h)
{
	__builtin_memcpy(data, &h->eth, sizeof(h->eth));
	__builtin_memcpy(data + L3_OFF, &h->ip, sizeof(h->ip));
	__builtin_memcpy(data + L4_OFF, &h->udp, sizeof(h->udp));
}

static __always_inline int count(__u32 outcome, int verdict)
{
	__u64 *n = bpf_map_lookup_elem(&tf_stats, &outcome);

	if (n)
		*n += 1;
	return verdict;
}

static __always_inline __u16 fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

static __always_inline __u16 ip_checksum(struct iphdr *ip)
{
	ip->check = 0;
	return ~fold(bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0));
}

/* The next hop towards daddr from saddr: fills the MACs of *eth; returns the interface
 * to leave by, or 0 when the FIB has none to give (a local address, no neighbour yet). */
static __always_inline __u32 next_hop(struct xdp_md *ctx, __be32 saddr, __be32 daddr,
				      __u16 tot_len, struct ethhdr *eth)
{
	struct bpf_fib_lookup fib = {};

	fib.family = AF_INET;
	fib.l4_protocol = PROTO_UDP;
	fib.tot_len = tot_len;
	fib.ipv4_src = saddr;
	fib.ipv4_dst = daddr;
	fib.ifindex = ctx->ingress_ifindex;
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return 0;
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	return fib.ifindex;
}

/* The UDP checksum after the words in from[] became those in to[] (16-bit words in
 * 32-bit slots; sizes in bytes, multiples of 4); 0 stays 0 (no checksum, IPv4). */
static __always_inline __u16 udp_checksum(__u16 old, __be32 *from, __u32 from_size, __be32 *to,
					  __u32 to_size)
{
	__u16 sum;

	if (!old)
		return 0;
	sum = ~fold(bpf_csum_diff(from, from_size, to, to_size, (__u16)~old));
	return sum ? sum : 0xffff;
}

static __always_inline int send(struct xdp_md *ctx, __u32 ifindex)
{
	return ifindex == ctx->ingress_ifindex ? XDP_TX : bpf_redirect(ifindex, 0);
}

/* An IPv6 frame's headers (no extension headers), as tf_hdrs is for IPv4. */
struct tf_hdrs6 {
	struct ethhdr eth;
	struct ipv6hdr ip;
	struct udphdr udp;
};

#define L4_OFF6 (L3_OFF + sizeof(struct ipv6hdr))
#define HDRS6_LEN (L4_OFF6 + sizeof(struct udphdr))

static __always_inline void read_hdrs6(void *data, struct tf_hdrs6 *h)
{
	__builtin_memcpy(&h->eth, data, sizeof(h->eth));
	__builtin_memcpy(&h->ip, data + L3_OFF, sizeof(h->ip));
	__builtin_memcpy(&h->udp, data + L4_OFF6, sizeof(h->udp));
}

static __always_inline void write_hdrs6(void *data, struct tf_hdrs6 *h)
{
	__builtin_memcpy(data, &h->eth, sizeof(h->eth));
	__builtin_memcpy(data + L3_OFF, &h->ip, sizeof(h->ip));
	__builtin_memcpy(data + L4_OFF6, &h->udp, sizeof(h->udp));
}

static __always_inline __u32 next_hop6(struct xdp_md *ctx, __u8 *saddr, __u8 *daddr,
				       __u16 tot_len, struct ethhdr *eth)
{
	struct bpf_fib_lookup fib = {};

	fib.family = AF_INET6;
	fib.l4_protocol = PROTO_UDP;
	fib.tot_len = tot_len;
	__builtin_memcpy(fib.ipv6_src, saddr, 16);
	__builtin_memcpy(fib.ipv6_dst, daddr, 16);
	fib.ifindex = ctx->ingress_ifindex;
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return 0;
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IPV6);
	return fib.ifindex;
}

/* The new IPv6 header: from the relay, hop limit 64, no traffic class or flow label. */
static __always_inline void ip6_head(struct ipv6hdr *ip, __u8 *saddr, __u8 *daddr, __u16 plen)
{
	*(__be32 *)ip = bpf_htonl(0x60000000);
	ip->payload_len = bpf_htons(plen);
	ip->nexthdr = PROTO_UDP;
	ip->hop_limit = 64;
	__builtin_memcpy(&ip->saddr, saddr, 16);
	__builtin_memcpy(&ip->daddr, daddr, 16);
}

static __noinline int fast4(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct tf_hdrs h;
	struct ethhdr eth;
	__be32 from[5] = {}, to[5] = {};
	__u64 now;
	__u32 ifindex;
	__u16 ulen, n;

	if (data + HDRS_LEN > data_end)
		return count(TF_PASSED, XDP_PASS);
	read_hdrs(data, &h);
	if (h.ip.ihl != 5 || h.ip.version != 4 ||
	    h.ip.protocol != PROTO_UDP || (h.ip.frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return count(TF_PASSED, XDP_PASS);
	ulen = bpf_ntohs(h.udp.len);
	if (ulen < sizeof(struct udphdr) || bpf_ntohs(h.ip.tot_len) != sizeof(h.ip) + ulen ||
	    data + L4_OFF + ulen > data_end) /* trailing bytes (Ethernet padding) may follow */
		return count(TF_PASSED, XDP_PASS);
	n = ulen - sizeof(struct udphdr); /* the UDP payload's length */

	/* peer -> client: a datagram to a relayed address with a bound channel */
	struct tf_peer_key pk = {
		.peer_ip = h.ip.saddr, .relay_ip = h.ip.daddr,
		.peer_port = h.udp.source, .relay_port = h.udp.dest,
	};
	struct tf_peer_val *pv = bpf_map_lookup_elem(&tf_peers, &pk);
	if (pv) {
		now = bpf_ktime_get_ns();
		if (now >= pv->deadline_ns)
			return count(TF_EXPIRED, XDP_PASS);
		if (n > 0xFFFF - 12 - 20)
			return count(TF_PASSED, XDP_PASS);
		ifindex = next_hop(ctx, pv->server_ip, pv->client_ip, sizeof(h.ip) + ulen + 4, &eth);
		if (!ifindex)
			return count(TF_NO_ROUTE, XDP_PASS);
		from[0] = h.ip.saddr;
		from[1] = h.ip.daddr;
		__builtin_memcpy(&from[2], &h.udp, 4); /* the two ports */
		((__be16 *)&from[3])[0] = h.udp.len;
		((__be16 *)&from[3])[1] = h.udp.len;
		to[0] = pv->client_ip;
		to[1] = pv->server_ip;
		((__be16 *)&to[2])[0] = pv->server_port;
		((__be16 *)&to[2])[1] = pv->client_port;
		((__be16 *)&to[3])[0] = bpf_htons(ulen + 4);
		((__be16 *)&to[3])[1] = bpf_htons(ulen + 4);
		((__be16 *)&to[4])[0] = bpf_htons(pv->channel); /* the ChannelData header */
		((__be16 *)&to[4])[1] = bpf_htons(n);
		h.udp.check = udp_checksum(h.udp.check, from, 16, to, 20);
		h.eth = eth;
		h.ip.saddr = pv->server_ip;
		h.ip.daddr = pv->client_ip;
		h.ip.tot_len = bpf_htons(sizeof(h.ip) + ulen + 4);
		h.ip.ttl = 64;
		h.ip.frag_off = bpf_htons(IP_DF);
		h.ip.check = ip_checksum(&h.ip);
		h.udp.source = pv->server_port;
		h.udp.dest = pv->client_port;
		h.udp.len = bpf_htons(ulen + 4);
		if (bpf_xdp_adjust_head(ctx, -4))
			return count(TF_PASSED, XDP_PASS);
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		if (data + HDRS_LEN + 4 > data_end)
			return XDP_DROP; /* cannot happen: the frame only grew */
		write_hdrs(data, &h);
		__builtin_memcpy(data + HDRS_LEN, &to[4], 4); /* the ChannelData header */
		__sync_fetch_and_add(&pv->packets, 1);
		__sync_fetch_and_add(&pv->bytes, n);
		return count(TF_TO_CLIENT, send(ctx, ifindex));
	}

	/* client -> peer: ChannelData of a bound channel, unpadded */
	__u8 *cdh = data + HDRS_LEN;
	if (n < 4 || (void *)(cdh + 4) > data_end || cdh[0] < 0x40 || cdh[0] > 0x7F)
		return TF_INDICATION;
	__u16 length = ((__u16)cdh[2] << 8) | cdh[3];
	if (length != n - 4)
		return TF_INDICATION;
	struct tf_client_key ck = {
		.client_ip = h.ip.saddr, .server_ip = h.ip.daddr,
		.client_port = h.udp.source, .server_port = h.udp.dest,
		.channel = ((__u16)cdh[0] << 8) | cdh[1],
	};
	struct tf_client_val *cv = bpf_map_lookup_elem(&tf_clients, &ck);
	if (!cv)
		return TF_INDICATION;
	now = bpf_ktime_get_ns();
	if (now >= cv->deadline_ns)
		return count(TF_EXPIRED, XDP_PASS);
	ifindex = next_hop(ctx, cv->relay_ip, cv->peer_ip, sizeof(h.ip) + ulen - 4, &eth);
	if (!ifindex)
		return count(TF_NO_ROUTE, XDP_PASS);
	from[0] = h.ip.saddr;
	from[1] = h.ip.daddr;
	__builtin_memcpy(&from[2], &h.udp, 4);
	((__be16 *)&from[3])[0] = h.udp.len;
	((__be16 *)&from[3])[1] = h.udp.len;
	__builtin_memcpy(&from[4], cdh, 4);
	to[0] = cv->relay_ip;
	to[1] = cv->peer_ip;
	((__be16 *)&to[2])[0] = cv->relay_port;
	((__be16 *)&to[2])[1] = cv->peer_port;
	((__be16 *)&to[3])[0] = bpf_htons(ulen - 4);
	((__be16 *)&to[3])[1] = bpf_htons(ulen - 4);
	h.udp.check = udp_checksum(h.udp.check, from, 20, to, 16);
	h.eth = eth;
	h.ip.saddr = cv->relay_ip;
	h.ip.daddr = cv->peer_ip;
	h.ip.tot_len = bpf_htons(sizeof(h.ip) + ulen - 4);
	h.ip.ttl = 64;
	h.ip.frag_off = bpf_htons(IP_DF);
	h.ip.check = ip_checksum(&h.ip);
	h.udp.source = cv->relay_port;
	h.udp.dest = cv->peer_port;
	h.udp.len = bpf_htons(ulen - 4);
	if (bpf_xdp_adjust_head(ctx, 4))
		return count(TF_PASSED, XDP_PASS);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + HDRS_LEN > data_end)
		return XDP_DROP; /* cannot happen: the payload is still behind */
	write_hdrs(data, &h);
	__sync_fetch_and_add(&cv->packets, 1);
	__sync_fetch_and_add(&cv->bytes, length);
	return count(TF_TO_PEER, send(ctx, ifindex));
}

static __noinline int fast6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct tf_hdrs6 h;
	struct ethhdr eth;
	__be32 from[11] = {}, to[11] = {};
	__u64 now;
	__u32 ifindex;
	__u16 ulen, n;

	if (data + HDRS6_LEN > data_end)
		return count(TF_PASSED, XDP_PASS);
	read_hdrs6(data, &h);
	if (h.ip.version != 6 || h.ip.nexthdr != PROTO_UDP || !h.udp.check)
		return count(TF_PASSED, XDP_PASS);
	ulen = bpf_ntohs(h.udp.len);
	if (ulen < sizeof(struct udphdr) || bpf_ntohs(h.ip.payload_len) != ulen ||
	    data + L4_OFF6 + ulen > data_end)
		return count(TF_PASSED, XDP_PASS);
	n = ulen - sizeof(struct udphdr);
	/* the words every rewrite changes: addresses, ports, the UDP length twice */
	__builtin_memcpy(&from[0], &h.ip.saddr, 16);
	__builtin_memcpy(&from[4], &h.ip.daddr, 16);
	__builtin_memcpy(&from[8], &h.udp, 4);
	((__be16 *)&from[9])[0] = h.udp.len;
	((__be16 *)&from[9])[1] = h.udp.len;

	/* peer -> client */
	struct tf_peer6_key pk = {.peer_port = h.udp.source, .relay_port = h.udp.dest};
	__builtin_memcpy(pk.peer_ip, &h.ip.saddr, 16);
	__builtin_memcpy(pk.relay_ip, &h.ip.daddr, 16);
	struct tf_peer6_val *pv = bpf_map_lookup_elem(&tf_peers6, &pk);
	if (pv) {
		now = bpf_ktime_get_ns();
		if (now >= pv->deadline_ns)
			return count(TF_EXPIRED, XDP_PASS);
		if (n > 0xFFFF - 12)
			return count(TF_PASSED, XDP_PASS);
		ifindex = next_hop6(ctx, pv->server_ip, pv->client_ip,
				    sizeof(h.ip) + ulen + 4, &eth);
		if (!ifindex)
			return count(TF_NO_ROUTE, XDP_PASS);
		__builtin_memcpy(&to[0], pv->client_ip, 16);
		__builtin_memcpy(&to[4], pv->server_ip, 16);
		((__be16 *)&to[8])[0] = pv->server_port;
		((__be16 *)&to[8])[1] = pv->client_port;
		((__be16 *)&to[9])[0] = bpf_htons(ulen + 4);
		((__be16 *)&to[9])[1] = bpf_htons(ulen + 4);
		((__be16 *)&to[10])[0] = bpf_htons(pv->channel);
		((__be16 *)&to[10])[1] = bpf_htons(n);
		h.udp.check = udp_checksum(h.udp.check, from, 40, to, 44);
		h.eth = eth;
		ip6_head(&h.ip, pv->server_ip, pv->client_ip, ulen + 4);
		h.udp.source = pv->server_port;
		h.udp.dest = pv->client_port;
		h.udp.len = bpf_htons(ulen + 4);
		if (bpf_xdp_adjust_head(ctx, -4))
			return count(TF_PASSED, XDP_PASS);
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		if (data + HDRS6_LEN + 4 > data_end)
			return XDP_DROP;
		write_hdrs6(data, &h);
		__builtin_memcpy(data + HDRS6_LEN, &to[10], 4);
		__sync_fetch_and_add(&pv->packets, 1);
		__sync_fetch_and_add(&pv->bytes, n);
		return count(TF_TO_CLIENT, send(ctx, ifindex));
	}

	/* client -> peer */
	__u8 *cdh = data + HDRS6_LEN;
	if (n < 4 || (void *)(cdh + 4) > data_end || cdh[0] < 0x40 || cdh[0] > 0x7F)
		return TF_INDICATION;
	__u16 length = ((__u16)cdh[2] << 8) | cdh[3];
	if (length != n - 4)
		return TF_INDICATION;
	struct tf_client6_key ck = {
		.client_port = h.udp.source, .server_port = h.udp.dest,
		.channel = ((__u16)cdh[0] << 8) | cdh[1],
	};
	__builtin_memcpy(ck.client_ip, &h.ip.saddr, 16);
	__builtin_memcpy(ck.server_ip, &h.ip.daddr, 16);
	struct tf_client6_val *cv = bpf_map_lookup_elem(&tf_clients6, &ck);
	if (!cv)
		return TF_INDICATION;
	now = bpf_ktime_get_ns();
	if (now >= cv->deadline_ns)
		return count(TF_EXPIRED, XDP_PASS);
	ifindex = next_hop6(ctx, cv->relay_ip, cv->peer_ip, sizeof(h.ip) + ulen - 4, &eth);
	if (!ifindex)
		return count(TF_NO_ROUTE, XDP_PASS);
	__builtin_memcpy(&from[10], cdh, 4);
	__builtin_memcpy(&to[0], cv->relay_ip, 16);
	__builtin_memcpy(&to[4], cv->peer_ip, 16);
	((__be16 *)&to[8])[0] = cv->relay_port;
	((__be16 *)&to[8])[1] = cv->peer_port;
	((__be16 *)&to[9])[0] = bpf_htons(ulen - 4);
	((__be16 *)&to[9])[1] = bpf_htons(ulen - 4);
	h.udp.check = udp_checksum(h.udp.check, from, 44, to, 40);
	h.eth = eth;
	ip6_head(&h.ip, cv->relay_ip, cv->peer_ip, ulen - 4);
	h.udp.source = cv->relay_port;
	h.udp.dest = cv->peer_port;
	h.udp.len = bpf_htons(ulen - 4);
	if (bpf_xdp_adjust_head(ctx, 4))
		return count(TF_PASSED, XDP_PASS);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + HDRS6_LEN > data_end)
		return XDP_DROP;
	write_hdrs6(data, &h);
	__sync_fetch_and_add(&cv->packets, 1);
	__sync_fetch_and_add(&cv->bytes, length);
	return count(TF_TO_PEER, send(ctx, ifindex));
}

#include "turn_indications.h"

SEC("xdp")
int turn_fast(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return count(TF_PASSED, XDP_PASS);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		int verdict = fast4(ctx);
		return verdict == TF_INDICATION ? indication4(ctx) : verdict;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		int verdict = fast6(ctx);
		return verdict == TF_INDICATION ? indication6(ctx) : verdict;
	}
	return count(TF_PASSED, XDP_PASS);
}
