/* SPDX-License-Identifier: Apache-2.0 */
/* Packet parsing shared by the edge's XDP programs: Ethernet (up to two VLAN tags),
 * IPv4, IPv6 (with up to four extension headers), TCP and UDP, into one flat record.
 *
 * Every read is checked against data_end before it is made; a packet that ends early
 * is reported as not parsed and the program lets it pass.  Addresses and ports stay
 * in network byte order except where the field says otherwise.
 */
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_DEST 60

#define PROTO_TCP 6
#define PROTO_UDP 17

struct ae_vlan_hdr {
	__be16 tci;
	__be16 proto;
};

struct ae_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

struct pkt {
	__u64 src[2];      /* source address; IPv4 in the first four bytes, rest zero */
	__u64 dst[2];      /* destination address, likewise */
	__u32 l4_off;      /* offset of the TCP/UDP header from the start of the frame */
	__u32 payload_off; /* offset of the transport payload from the start of the frame */
	__u16 sport;       /* host byte order; 0 without a transport header */
	__u16 dport;       /* host byte order */
	__u16 ip_len;      /* length of the IP packet (header included), from its header */
	__u8 family;       /* 4 or 6 */
	__u8 proto;        /* IPv4 protocol or IPv6 upper-layer next header */
	__u8 tcp_flags;    /* FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 URG 0x20 ... */
	__u8 has_l4;       /* 1 when the TCP/UDP header is present (first fragment) */
};

/* Returns 0 and fills *p for an IPv4/IPv6 packet, -1 for anything else. */
static __always_inline int parse_packet(struct xdp_md *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth);
	__u16 h_proto;
	int first_fragment = 1;

	if ((void *)(eth + 1) > data_end)
		return -1;
	h_proto = eth->h_proto;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		struct ae_vlan_hdr *vh;
		if (h_proto != bpf_htons(ETH_P_8021Q) && h_proto != bpf_htons(ETH_P_8021AD))
			break;
		vh = data + off;
		if ((void *)(vh + 1) > data_end)
			return -1;
		h_proto = vh->proto;
		off += sizeof(*vh);
	}

	if (h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + off;
		__u32 ihl;

		if ((void *)(ip + 1) > data_end)
			return -1;
		ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return -1;
		p->family = 4;
		p->proto = ip->protocol;
		p->ip_len = bpf_ntohs(ip->tot_len);
		__builtin_memcpy(&p->src[0], &ip->saddr, 4);
		__builtin_memcpy(&p->dst[0], &ip->daddr, 4);
		if (ip->frag_off & bpf_htons(IP_OFFSET))
			first_fragment = 0;
		off += ihl;
	} else if (h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + off;
		__u8 nexthdr;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		p->family = 6;
		p->ip_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		__builtin_memcpy(p->src, &ip6->saddr, 16);
		__builtin_memcpy(p->dst, &ip6->daddr, 16);
		nexthdr = ip6->nexthdr;
		off += sizeof(*ip6);
#pragma unroll
		for (int i = 0; i < 4; i++) {
			struct ipv6_opt_hdr *eh;
			if (nexthdr != NEXTHDR_HOP && nexthdr != NEXTHDR_ROUTING &&
			    nexthdr != NEXTHDR_DEST && nexthdr != NEXTHDR_FRAGMENT)
				break;
			eh = data + (off & 0xffff);
			if ((void *)(eh + 1) > data_end)
				return -1;
			if (nexthdr == NEXTHDR_FRAGMENT) {
				struct ae_frag_hdr *fh = (void *)eh;
				if ((void *)(fh + 1) > data_end)
					return -1;
				if (fh->frag_off & bpf_htons(0xFFF8))
					first_fragment = 0;
				off += sizeof(*fh);
			} else {
				off += (eh->hdrlen + 1) * 8;
			}
			nexthdr = eh->nexthdr;
		}
		p->proto = nexthdr;
	} else {
		return -1;
	}

	off &= 0xffff; /* keeps the verifier's range of the offset small */
	p->l4_off = off;
	if (!first_fragment)
		return 0;
	if (p->proto == PROTO_TCP) {
		struct tcphdr *tcp = data + off;
		__u32 doff;

		if ((void *)(tcp + 1) > data_end)
			return 0;
		doff = tcp->doff * 4;
		if (doff < sizeof(*tcp))
			return 0;
		p->sport = bpf_ntohs(tcp->source);
		p->dport = bpf_ntohs(tcp->dest);
		p->tcp_flags = ((__u8 *)tcp)[13];
		p->payload_off = off + doff;
		p->has_l4 = 1;
	} else if (p->proto == PROTO_UDP) {
		struct udphdr *udp = data + off;

		if ((void *)(udp + 1) > data_end)
			return 0;
		p->sport = bpf_ntohs(udp->source);
		p->dport = bpf_ntohs(udp->dest);
		p->payload_off = off + sizeof(*udp);
		p->has_l4 = 1;
	}
	return 0;
}
