/* SPDX-License-Identifier: Apache-2.0 */
/* TURN's kernel fast path, second half: Send and Data indications (RFC 8656 §11) for
 * permissions user space has installed, included by turn_fast.bpf.c after its helpers.
 *
 *   client -> peer: a Send indication (STUN type 0x0016, magic cookie) from a client's
 *   5-tuple, whose XOR-PEER-ADDRESS names a peer IP in tf_sends, leaves from the
 *   relayed address to that peer carrying only its DATA: the STUN header and the
 *   attributes before DATA are cut from the head (bpf_xdp_adjust_head), DATA's padding
 *   and the attributes after it from the tail (bpf_xdp_adjust_tail).
 *
 *   peer -> client: a datagram from a peer IP in tf_datas to a relayed address (and
 *   with no channel in tf_peers) leaves from the listener to the client as a Data
 *   indication: a STUN header with a fresh transaction id (a per-CPU counter and
 *   bpf_get_prandom_u32), XOR-PEER-ADDRESS and DATA, the payload, zeros to pad it to 4
 *   bytes -- the bytes the Python core would have sent, transaction id aside.
 *
 * Both run from indication4/indication6 (at the end), which turn_fast calls for frames
 * fast4/fast6 found no channel for (TF_INDICATION), each in its own BPF subprogram so
 * that the stacks of the channel and indication paths never add up.
 *
 * The Send indication is read with a bounded walk over at most TF_MAX_ATTRS attributes
 * (bpf_xdp_load_bytes at each header, nothing read past the message).  A FINGERPRINT is
 * checked as the core checks it (the last attribute; CRC-32 of what precedes it, see
 * crc32.h), once the maps have permitted the peer.  Whatever the core might judge
 * differently passes to user space untouched: a message whose length or cookie is off,
 * an attribute running past the end, a second XOR-PEER-ADDRESS or DATA, a wrong or
 * misplaced FINGERPRINT, MESSAGE-INTEGRITY(-SHA256), an unknown comprehension-required
 * attribute, a peer of the other family, more than 64 bytes before DATA or after it,
 * and -- as for channels -- no entry, an entry past its deadline, or no next hop from
 * the FIB (which also refuses a frame over the outgoing MTU, so a Data indication that
 * would not fit is left to user space).  DONT-FRAGMENT and comprehension-optional
 * attributes are skipped, as the core skips them.
 *
 * Checksums stay incremental: for a Send indication, the sum of the bytes cut (read
 * into a per-CPU scratch buffer, DATA's own last bytes zeroed) is taken out of the old
 * checksum; for a Data indication the 36 (IPv4) or 48 (IPv6) bytes added go in, and
 * the zero padding adds nothing.  Both paths keep the payload's byte parity (everything cut or
 * added is a multiple of 4 bytes long), which is what makes that exact.
 */
#pragma once

#include "crc32.h"

#define TF_MAX_PERMISSIONS 65536
#define TF_MAX_ATTRS 8
#define TF_CUT_MAX 64 /* bytes before DATA's value, or after it, the program will cut */
#define STUN_COOKIE 0x2112A442
#define STUN_SEND 0x0016
#define STUN_DATA 0x0017
#define ATTR_XOR_PEER 0x0012
#define ATTR_DATA 0x0013
#define ATTR_DONT_FRAGMENT 0x001A
#define ATTR_MI 0x0008
#define ATTR_MI256 0x001C
#define ATTR_FINGERPRINT 0x8028
#define FINGERPRINT_XOR 0x5354554E
#define DATA_IND_LEN4 36 /* header 20, XOR-PEER-ADDRESS 12, DATA's header 4 */
#define DATA_IND_LEN6 48 /* XOR-PEER-ADDRESS 24 */

/* Permissions: a client's 5-tuple and a peer IP -> the relayed address to send from;
 * a peer IP and a relayed address -> the client to send to.  Both carry the
 * permission's deadline (the earliest of its and its allocation's expiry) and payload
 * counters, as channels do; anyedge.edge.turnfast mirrors them. */
struct tf_send_key {
	__be32 client_ip;
	__be32 server_ip;
	__be32 peer_ip;
	__be16 client_port;
	__be16 server_port;
};

struct tf_send_val {
	__be32 relay_ip;
	__be16 relay_port;
	__u16 pad;
	__u64 deadline_ns;
	__u64 packets;
	__u64 bytes;
};

struct tf_data_key {
	__be32 peer_ip;
	__be32 relay_ip;
	__be16 relay_port;
	__u16 pad;
};

struct tf_data_val {
	__be32 client_ip;
	__be32 server_ip;
	__be16 client_port;
	__be16 server_port;
	__u32 pad;
	__u64 deadline_ns;
	__u64 packets;
	__u64 bytes;
};

struct tf_send6_key {
	__u8 client_ip[16];
	__u8 server_ip[16];
	__u8 peer_ip[16];
	__be16 client_port;
	__be16 server_port;
};

struct tf_send6_val {
	__u8 relay_ip[16];
	__be16 relay_port;
	__u16 pad;
	__u32 pad2;
	__u64 deadline_ns;
	__u64 packets;
	__u64 bytes;
};

struct tf_data6_key {
	__u8 peer_ip[16];
	__u8 relay_ip[16];
	__be16 relay_port;
	__u16 pad;
};

struct tf_data6_val {
	__u8 client_ip[16];
	__u8 server_ip[16];
	__be16 client_port;
	__be16 server_port;
	__u32 pad;
	__u64 deadline_ns;
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TF_MAX_PERMISSIONS);
	__type(key, struct tf_send_key);
	__type(value, struct tf_send_val);
} tf_sends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TF_MAX_PERMISSIONS);
	__type(key, struct tf_data_key);
	__type(value, struct tf_data_val);
} tf_datas SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TF_MAX_PERMISSIONS);
	__type(key, struct tf_send6_key);
	__type(value, struct tf_send6_val);
} tf_sends6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TF_MAX_PERMISSIONS);
	__type(key, struct tf_data6_key);
	__type(value, struct tf_data6_val);
} tf_datas6 SEC(".maps");

/* Data indications sent by each CPU: the non-random half of their transaction ids. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tf_tids SEC(".maps");

/* What a Send indication says: the peer (address as on the wire, unXORed) and where
 * DATA's value is, as offsets from the start of the UDP payload. */
struct tf_send_msg {
	__u8 addr[16];
	__be16 port;
	__u8 family; /* 1 IPv4, 2 IPv6 */
	__u8 pad;
	__u32 doff;
	__u32 dlen;
	__u32 fp; /* where FINGERPRINT is, or 0 */
};

/* Room for what the walk and the checksum read out of a frame (the stack is too small
 * for it beneath the program's other frames); one per CPU, as XDP runs one frame at a
 * time on each. */
struct tf_scratch {
	__u8 buf[TF_CUT_MAX];
	__u8 head[20];
	__u8 v[20];
	struct tf_send_msg m;
	struct tf_send6_key key6;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tf_scratch);
} tf_scratch SEC(".maps");

static __always_inline struct tf_scratch *scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&tf_scratch, &zero);
}

/* Parse the Send indication that is the UDP payload at packet offset poff, n bytes;
 * 0 when it is one the program may relay (module comment), else -1. */
static __noinline int parse_send(struct xdp_md *ctx, __u32 poff, __u32 n,
				      struct tf_send_msg *m)
{
	struct tf_scratch *sc = scratch();
	__u8 tl[4];
	__u32 off = 20, i, len, plen, t, fp = 0;
	int peer = 0, data = 0;

	if (!sc || n < 20 || n > 0xFFFF)
		return -1;
	__u8 *head = sc->head, *v = sc->v;
	if (bpf_xdp_load_bytes(ctx, poff, head, 20))
		return -1;
	if (head[0] != (STUN_SEND >> 8) || head[1] != (STUN_SEND & 0xFF) ||
	    (((__u32)head[2] << 8) | head[3]) != n - 20 || (n & 3) ||
	    *(__be32 *)&head[4] != bpf_htonl(STUN_COOKIE))
		return -1;
	for (i = 0; i < TF_MAX_ATTRS; i++) {
		if (off >= n)
			break;
		if (off > 0xFFFF || bpf_xdp_load_bytes(ctx, poff + off, tl, sizeof(tl)))
			return -1;
		t = ((__u32)tl[0] << 8) | tl[1];
		len = ((__u32)tl[2] << 8) | tl[3];
		plen = (len + 3) & ~3U;
		if (off + 4 + plen > n)
			return -1;
		if (t == ATTR_XOR_PEER) {
			if (peer)
				return -1;
			peer = 1;
			if (len == 8) {
				if (bpf_xdp_load_bytes(ctx, poff + off + 4, v, 8) || v[1] != 1)
					return -1;
				*(__be32 *)m->addr = *(__be32 *)&v[4] ^ bpf_htonl(STUN_COOKIE);
			} else if (len == 20) {
				if (bpf_xdp_load_bytes(ctx, poff + off + 4, v, 20) || v[1] != 2)
					return -1;
				/* XORed with the cookie and the transaction id: head[4..20) */
				for (int j = 0; j < 16; j++)
					m->addr[j] = v[4 + j] ^ head[4 + j];
			} else {
				return -1;
			}
			m->family = v[1];
			m->port = *(__be16 *)&v[2] ^ bpf_htons(STUN_COOKIE >> 16);
		} else if (t == ATTR_DATA) {
			if (data)
				return -1;
			data = 1;
			m->doff = off + 4;
			m->dlen = len;
		} else if (t == ATTR_FINGERPRINT) {
			if (len != 4 || off + 8 != n) /* the last attribute, or the core's to judge */
				return -1;
			fp = off;
		} else if (t == ATTR_MI || t == ATTR_MI256 ||
			   (t < 0x8000 && t != ATTR_DONT_FRAGMENT)) {
			return -1;
		}
		off += 4 + plen;
	}
	if (off != n || !peer || !data)
		return -1;
	m->fp = fp;
	return 0;
}

/* Whether the message's FINGERPRINT (if any) holds the CRC-32 of what precedes it, as
 * the core checks it: read only for Send indications the maps permit. */
static __always_inline int fingerprint_ok(struct xdp_md *ctx, __u32 poff, struct tf_send_msg *m,
					  __u8 *buf)
{
	__be32 want;
	int ok;

	if (!m->fp)
		return 1;
	if (bpf_xdp_load_bytes(ctx, poff + m->fp + 4, &want, 4))
		return 0;
	return crc32_frame(ctx, poff, m->fp, buf, &ok) == (bpf_ntohl(want) ^ FINGERPRINT_XOR) && ok;
}

/* The one's-complement sum of the bytes a Send indication loses, added to seed as
 * bpf_csum_diff removes them: [0, doff) and [doff + dlen, n) of the UDP payload. */
static __noinline __s64 cut_sum(struct xdp_md *ctx, __u32 poff, __u32 n,
				     struct tf_send_msg *m, __s64 seed)
{
	struct tf_scratch *sc = scratch();
	__u64 a, size, keep; /* 64 bits: the bounds checked are the ones passed */

	if (!sc)
		return -1;
	__u8 *buf = sc->buf;
	size = m->doff;
	if (size < 4 || size > TF_CUT_MAX)
		return -1;
	if (bpf_xdp_load_bytes(ctx, poff, buf, size))
		return -1;
	seed = bpf_csum_diff((__be32 *)buf, size, 0, 0, (__wsum)seed);
	/* from the 4-byte boundary at or before DATA's end, with DATA's own bytes zeroed */
	keep = m->dlen & 3;
	a = m->doff + (m->dlen & ~3U);
	if (a > n)
		return -1;
	size = n - a;
	if (!size)
		return seed;
	if (size > TF_CUT_MAX)
		return -1;
	if (bpf_xdp_load_bytes(ctx, poff + a, buf, size))
		return -1;
	if (keep > 0)
		buf[0] = 0;
	if (keep > 1)
		buf[1] = 0;
	if (keep > 2)
		buf[2] = 0;
	return bpf_csum_diff((__be32 *)buf, size, 0, 0, (__wsum)seed);
}

/* Cut a Send indication down to DATA's value: the frame becomes hdr_len bytes of
 * headers then dlen bytes of payload.  0, or -1 when the kernel refused. */
static __always_inline int cut_to_data(struct xdp_md *ctx, __u32 hdr_len, struct tf_send_msg *m)
{
	void *data, *data_end;

	if (bpf_xdp_adjust_head(ctx, m->doff))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	return bpf_xdp_adjust_tail(ctx, (int)(hdr_len + m->dlen) - (int)(data_end - data)) ? -1 : 0;
}

/* A 12-byte transaction id for a Data indication: random, then this CPU's count. */
static __always_inline void new_tid(__be32 *tid)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&tf_tids, &zero);
	__u64 c = 0;

	if (n)
		c = (*n)++;
	tid[0] = bpf_get_prandom_u32();
	tid[1] = bpf_htonl(c >> 32);
	tid[2] = bpf_htonl((__u32)c);
}

/* Make room for a Data indication: padding zeros at the payload's end (first trimming
 * what trails the datagram, Ethernet padding), then `grow` bytes at the head. */
static __always_inline int make_room(struct xdp_md *ctx, __u32 end, __u32 pad, __u32 grow)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 zeros[4] = {};
	int delta = (int)(end + pad) - (int)(data_end - data);

	if (delta && bpf_xdp_adjust_tail(ctx, delta))
		return -1;
	if ((pad == 1 && bpf_xdp_store_bytes(ctx, end, zeros, 1)) ||
	    (pad == 2 && bpf_xdp_store_bytes(ctx, end, zeros, 2)) ||
	    (pad == 3 && bpf_xdp_store_bytes(ctx, end, zeros, 3)))
		return -1;
	return bpf_xdp_adjust_head(ctx, -(int)grow) ? -1 : 0;
}

/* --- IPv4 ------------------------------------------------------------------------- */

static __noinline int send_ind4(struct xdp_md *ctx, struct tf_hdrs *h, __u16 n)
{
	struct tf_scratch *sc = scratch();
	struct tf_send_msg m = {};
	struct ethhdr eth;
	__be32 from[4], to[4];
	__u32 ifindex, dlen;
	__s64 sum;

	if (!sc || parse_send(ctx, HDRS_LEN, n, &m) || m.family != 1)
		return count(TF_PASSED, XDP_PASS);
	struct tf_send_key key = {
		.client_ip = h->ip.saddr, .server_ip = h->ip.daddr, .peer_ip = *(__be32 *)m.addr,
		.client_port = h->udp.source, .server_port = h->udp.dest,
	};
	struct tf_send_val *sv = bpf_map_lookup_elem(&tf_sends, &key);
	if (!sv)
		return count(TF_PASSED, XDP_PASS);
	if (bpf_ktime_get_ns() >= sv->deadline_ns)
		return count(TF_EXPIRED, XDP_PASS);
	if (!fingerprint_ok(ctx, HDRS_LEN, &m, sc->buf))
		return count(TF_PASSED, XDP_PASS);
	dlen = m.dlen;
	ifindex = next_hop(ctx, sv->relay_ip, key.peer_ip, sizeof(h->ip) + 8 + dlen, &eth);
	if (!ifindex)
		return count(TF_NO_ROUTE, XDP_PASS);
	if (h->udp.check) {
		from[0] = h->ip.saddr;
		from[1] = h->ip.daddr;
		__builtin_memcpy(&from[2], &h->udp, 4);
		((__be16 *)&from[3])[0] = h->udp.len;
		((__be16 *)&from[3])[1] = h->udp.len;
		to[0] = sv->relay_ip;
		to[1] = key.peer_ip;
		((__be16 *)&to[2])[0] = sv->relay_port;
		((__be16 *)&to[2])[1] = m.port;
		((__be16 *)&to[3])[0] = bpf_htons(8 + dlen);
		((__be16 *)&to[3])[1] = bpf_htons(8 + dlen);
		sum = bpf_csum_diff(from, 16, to, 16, (__u16)~h->udp.check);
		sum = cut_sum(ctx, HDRS_LEN, n, &m, sum);
		if (sum < 0)
			return count(TF_PASSED, XDP_PASS);
		h->udp.check = ~fold(sum);
		if (!h->udp.check)
			h->udp.check = 0xffff;
	} else if (m.doff > TF_CUT_MAX || n - m.doff - dlen > TF_CUT_MAX) {
		return count(TF_PASSED, XDP_PASS); /* the same limits with or without a checksum */
	}
	h->eth = eth;
	h->ip.saddr = sv->relay_ip;
	h->ip.daddr = key.peer_ip;
	h->ip.tot_len = bpf_htons(sizeof(h->ip) + 8 + dlen);
	h->ip.ttl = 64;
	h->ip.frag_off = bpf_htons(IP_DF);
	h->ip.check = ip_checksum(&h->ip);
	h->udp.source = sv->relay_port;
	h->udp.dest = m.port;
	h->udp.len = bpf_htons(8 + dlen);
	if (cut_to_data(ctx, HDRS_LEN, &m))
		return XDP_DROP; /* the frame is half cut: nothing sensible to pass */
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (data + HDRS_LEN > data_end)
		return XDP_DROP;
	write_hdrs(data, h);
	__sync_fetch_and_add(&sv->packets, 1);
	__sync_fetch_and_add(&sv->bytes, dlen);
	return count(TF_SEND_TO_PEER, send(ctx, ifindex));
}

static __noinline int data_ind4(struct xdp_md *ctx, struct tf_hdrs *h,
				     struct tf_data_val *dv, __u16 n, __u16 ulen)
{
	struct ethhdr eth;
	__be32 from[4], to[13];
	__u32 ifindex, pad = (4 - (n & 3)) & 3, grow = DATA_IND_LEN4 + pad;
	__u16 nlen = ulen + grow;

	if (bpf_ktime_get_ns() >= dv->deadline_ns)
		return count(TF_EXPIRED, XDP_PASS);
	if (n > 0xFFFF - 20 - 8 - DATA_IND_LEN4 - 3)
		return count(TF_PASSED, XDP_PASS);
	ifindex = next_hop(ctx, dv->server_ip, dv->client_ip, sizeof(h->ip) + nlen, &eth);
	if (!ifindex)
		return count(TF_NO_ROUTE, XDP_PASS);
	from[0] = h->ip.saddr;
	from[1] = h->ip.daddr;
	__builtin_memcpy(&from[2], &h->udp, 4);
	((__be16 *)&from[3])[0] = h->udp.len;
	((__be16 *)&from[3])[1] = h->udp.len;
	to[0] = dv->client_ip;
	to[1] = dv->server_ip;
	((__be16 *)&to[2])[0] = dv->server_port;
	((__be16 *)&to[2])[1] = dv->client_port;
	((__be16 *)&to[3])[0] = bpf_htons(nlen);
	((__be16 *)&to[3])[1] = bpf_htons(nlen);
	/* the Data indication's head: header, XOR-PEER-ADDRESS, DATA's header */
	to[4] = bpf_htonl((STUN_DATA << 16) | (DATA_IND_LEN4 - 20 + n + pad));
	to[5] = bpf_htonl(STUN_COOKIE);
	new_tid(&to[6]);
	to[9] = bpf_htonl((ATTR_XOR_PEER << 16) | 8);
	to[10] = bpf_htonl((1 << 16) | (bpf_ntohs(h->udp.source) ^ (STUN_COOKIE >> 16)));
	to[11] = h->ip.saddr ^ bpf_htonl(STUN_COOKIE);
	to[12] = bpf_htonl((ATTR_DATA << 16) | n);
	h->udp.check = udp_checksum(h->udp.check, from, 16, to, 52);
	h->eth = eth;
	h->ip.saddr = dv->server_ip;
	h->ip.daddr = dv->client_ip;
	h->ip.tot_len = bpf_htons(sizeof(h->ip) + nlen);
	h->ip.ttl = 64;
	h->ip.frag_off = bpf_htons(IP_DF);
	h->ip.check = ip_checksum(&h->ip);
	h->udp.source = dv->server_port;
	h->udp.dest = dv->client_port;
	h->udp.len = bpf_htons(nlen);
	if (make_room(ctx, L4_OFF + ulen, pad, DATA_IND_LEN4))
		return count(TF_PASSED, XDP_PASS); /* only bytes past the datagram changed */
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (data + HDRS_LEN + DATA_IND_LEN4 > data_end)
		return XDP_DROP;
	write_hdrs(data, h);
	__builtin_memcpy(data + HDRS_LEN, &to[4], DATA_IND_LEN4);
	__sync_fetch_and_add(&dv->packets, 1);
	__sync_fetch_and_add(&dv->bytes, n);
	return count(TF_DATA_TO_CLIENT, send(ctx, ifindex));
}

/* --- IPv6 ------------------------------------------------------------------------- */

static __noinline int send_ind6(struct xdp_md *ctx, struct tf_hdrs6 *h, __u16 n,
				     __be32 *from)
{
	struct tf_scratch *sc = scratch();
	struct ethhdr eth;
	__be32 to[10] = {};
	__u32 ifindex, dlen;
	__s64 sum;

	if (!sc)
		return count(TF_PASSED, XDP_PASS);
	struct tf_send_msg *m = &sc->m;
	struct tf_send6_key *key = &sc->key6;
	if (parse_send(ctx, HDRS6_LEN, n, m) || m->family != 2)
		return count(TF_PASSED, XDP_PASS);
	__builtin_memcpy(key->client_ip, &h->ip.saddr, 16);
	__builtin_memcpy(key->server_ip, &h->ip.daddr, 16);
	__builtin_memcpy(key->peer_ip, m->addr, 16);
	key->client_port = h->udp.source;
	key->server_port = h->udp.dest;
	struct tf_send6_val *sv = bpf_map_lookup_elem(&tf_sends6, key);
	if (!sv)
		return count(TF_PASSED, XDP_PASS);
	if (bpf_ktime_get_ns() >= sv->deadline_ns)
		return count(TF_EXPIRED, XDP_PASS);
	if (!fingerprint_ok(ctx, HDRS6_LEN, m, sc->buf))
		return count(TF_PASSED, XDP_PASS);
	dlen = m->dlen;
	ifindex = next_hop6(ctx, sv->relay_ip, m->addr, sizeof(h->ip) + 8 + dlen, &eth);
	if (!ifindex)
		return count(TF_NO_ROUTE, XDP_PASS);
	__builtin_memcpy(&to[0], sv->relay_ip, 16);
	__builtin_memcpy(&to[4], m->addr, 16);
	((__be16 *)&to[8])[0] = sv->relay_port;
	((__be16 *)&to[8])[1] = m->port;
	((__be16 *)&to[9])[0] = bpf_htons(8 + dlen);
	((__be16 *)&to[9])[1] = bpf_htons(8 + dlen);
	sum = bpf_csum_diff(from, 40, to, 40, (__u16)~h->udp.check);
	sum = cut_sum(ctx, HDRS6_LEN, n, m, sum);
	if (sum < 0)
		return count(TF_PASSED, XDP_PASS);
	h->udp.check = ~fold(sum);
	if (!h->udp.check)
		h->udp.check = 0xffff;
	h->eth = eth;
	ip6_head(&h->ip, sv->relay_ip, m->addr, 8 + dlen);
	h->udp.source = sv->relay_port;
	h->udp.dest = m->port;
	h->udp.len = bpf_htons(8 + dlen);
	if (cut_to_data(ctx, HDRS6_LEN, m))
		return XDP_DROP;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (data + HDRS6_LEN > data_end)
		return XDP_DROP;
	write_hdrs6(data, h);
	__sync_fetch_and_add(&sv->packets, 1);
	__sync_fetch_and_add(&sv->bytes, dlen);
	return count(TF_SEND_TO_PEER, send(ctx, ifindex));
}

static __noinline int data_ind6(struct xdp_md *ctx, struct tf_hdrs6 *h,
				     struct tf_data6_val *dv, __be32 *from)
{
	struct ethhdr eth;
	__be32 to[22];
	__u16 ulen = bpf_ntohs(h->udp.len), n = ulen - sizeof(struct udphdr);
	__u32 ifindex, pad = (4 - (n & 3)) & 3, grow = DATA_IND_LEN6 + pad;
	__u16 nlen = ulen + grow;

	if (bpf_ktime_get_ns() >= dv->deadline_ns)
		return count(TF_EXPIRED, XDP_PASS);
	if (n > 0xFFFF - 8 - DATA_IND_LEN6 - 3)
		return count(TF_PASSED, XDP_PASS);
	ifindex = next_hop6(ctx, dv->server_ip, dv->client_ip, sizeof(h->ip) + nlen, &eth);
	if (!ifindex)
		return count(TF_NO_ROUTE, XDP_PASS);
	__builtin_memcpy(&to[0], dv->client_ip, 16);
	__builtin_memcpy(&to[4], dv->server_ip, 16);
	((__be16 *)&to[8])[0] = dv->server_port;
	((__be16 *)&to[8])[1] = dv->client_port;
	((__be16 *)&to[9])[0] = bpf_htons(nlen);
	((__be16 *)&to[9])[1] = bpf_htons(nlen);
	to[10] = bpf_htonl((STUN_DATA << 16) | (DATA_IND_LEN6 - 20 + n + pad));
	to[11] = bpf_htonl(STUN_COOKIE);
	new_tid(&to[12]);
	to[15] = bpf_htonl((ATTR_XOR_PEER << 16) | 20);
	to[16] = bpf_htonl((2 << 16) | (bpf_ntohs(h->udp.source) ^ (STUN_COOKIE >> 16)));
	/* the peer's address XORed with the cookie and the transaction id: to[11..15) */
	for (int j = 0; j < 4; j++)
		to[17 + j] = from[j] ^ to[11 + j];
	to[21] = bpf_htonl((ATTR_DATA << 16) | n);
	h->udp.check = udp_checksum(h->udp.check, from, 40, to, 88);
	h->eth = eth;
	ip6_head(&h->ip, dv->server_ip, dv->client_ip, nlen);
	h->udp.source = dv->server_port;
	h->udp.dest = dv->client_port;
	h->udp.len = bpf_htons(nlen);
	if (make_room(ctx, L4_OFF6 + ulen, pad, DATA_IND_LEN6))
		return count(TF_PASSED, XDP_PASS);
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (data + HDRS6_LEN + DATA_IND_LEN6 > data_end)
		return XDP_DROP;
	write_hdrs6(data, h);
	__builtin_memcpy(data + HDRS6_LEN, &to[10], DATA_IND_LEN6);
	__sync_fetch_and_add(&dv->packets, 1);
	__sync_fetch_and_add(&dv->bytes, n);
	return count(TF_DATA_TO_CLIENT, send(ctx, ifindex));
}

/* --- entry: what fast4/fast6 found no channel for ---------------------------------- */

/* A datagram from a permitted peer becomes a Data indication; a Send indication from a
 * client is relayed; anything else passes.  The headers were checked by fast4/fast6. */
static __noinline int indication4(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct tf_hdrs h;
	__u16 ulen, n;

	if (data + HDRS_LEN > data_end)
		return count(TF_PASSED, XDP_PASS);
	read_hdrs(data, &h);
	ulen = bpf_ntohs(h.udp.len);
	if (ulen < sizeof(struct udphdr))
		return count(TF_PASSED, XDP_PASS);
	n = ulen - sizeof(struct udphdr);
	struct tf_data_key dk = {.peer_ip = h.ip.saddr, .relay_ip = h.ip.daddr,
				 .relay_port = h.udp.dest};
	struct tf_data_val *dv = bpf_map_lookup_elem(&tf_datas, &dk);
	if (dv)
		return data_ind4(ctx, &h, dv, n, ulen);
	if (n >= 20 && data + HDRS_LEN + 1 <= data_end && *(__u8 *)(data + HDRS_LEN) < 0x40)
		return send_ind4(ctx, &h, n);
	return count(TF_PASSED, XDP_PASS);
}

static __noinline int indication6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct tf_hdrs6 h;
	__be32 from[10];
	__u16 ulen, n;

	if (data + HDRS6_LEN > data_end)
		return count(TF_PASSED, XDP_PASS);
	read_hdrs6(data, &h);
	ulen = bpf_ntohs(h.udp.len);
	if (ulen < sizeof(struct udphdr))
		return count(TF_PASSED, XDP_PASS);
	n = ulen - sizeof(struct udphdr);
	/* the words every rewrite changes: addresses, ports, the UDP length twice */
	__builtin_memcpy(&from[0], &h.ip.saddr, 16);
	__builtin_memcpy(&from[4], &h.ip.daddr, 16);
	__builtin_memcpy(&from[8], &h.udp, 4);
	((__be16 *)&from[9])[0] = h.udp.len;
	((__be16 *)&from[9])[1] = h.udp.len;
	struct tf_data6_key dk = {.relay_port = h.udp.dest};
	__builtin_memcpy(dk.peer_ip, &h.ip.saddr, 16);
	__builtin_memcpy(dk.relay_ip, &h.ip.daddr, 16);
	struct tf_data6_val *dv = bpf_map_lookup_elem(&tf_datas6, &dk);
	if (dv)
		return data_ind6(ctx, &h, dv, from);
	if (n >= 20 && data + HDRS6_LEN + 1 <= data_end && *(__u8 *)(data + HDRS6_LEN) < 0x40)
		return send_ind6(ctx, &h, n, from);
	return count(TF_PASSED, XDP_PASS);
}
