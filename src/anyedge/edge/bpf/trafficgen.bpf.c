// SPDX-License-Identifier: Apache-2.0
/* A packet generator in the kernel, for benchmarks: run `trafficgen` with
 * BPF_PROG_TEST_RUN in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES, Linux 5.18) and
 * every repetition sends the given frame out of the interface tg_config names
 * (bpf_redirect), as xdp-trafficgen does: millions of frames a second from one call,
 * no socket and no socket buffer on the sending side.
 *
 * The kernel copies the frame into each page of its pool once, and never again: a
 * receiver that rewrites the frame in place (an XDP program that relays it, as TURN's
 * fast path does) hands the generator its own rewrite back when the page comes round.
 * `trafficgen_fill` writes the frame of tg_frame into every packet before sending it,
 * for such receivers.
 *
 * Redirected into a veth, a frame reaches the peer only if the peer's NAPI is on,
 * which an XDP program on the peer turns on; `xdp_pass` is the program that does
 * nothing else, for a receiver that must see every frame in its stack.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32); /* the ifindex to send out of */
} tg_config SEC(".maps");

SEC("xdp")
int trafficgen(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u32 *ifindex = bpf_map_lookup_elem(&tg_config, &zero);

	if (!ifindex || !*ifindex)
		return XDP_ABORTED;
	return bpf_redirect(*ifindex, 0);
}

#define TG_MAX_FRAME 1536

struct tg_frame {
	__u32 len;
	__u8 data[TG_MAX_FRAME];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tg_frame);
} tg_frame SEC(".maps");

SEC("xdp")
int trafficgen_fill(struct xdp_md *ctx)
{
	__u32 zero = 0, len;
	__u32 *ifindex = bpf_map_lookup_elem(&tg_config, &zero);
	struct tg_frame *f = bpf_map_lookup_elem(&tg_frame, &zero);

	if (!ifindex || !*ifindex || !f)
		return XDP_ABORTED;
	len = f->len;
	if (len == 0 || len > TG_MAX_FRAME)
		return XDP_ABORTED;
	if (bpf_xdp_store_bytes(ctx, 0, f->data, len))
		return XDP_ABORTED;
	return bpf_redirect(*ifindex, 0);
}

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* Drops every frame: on the receiving veth, the floor of the native XDP path (the
 * veth's poll and returning the frame) with a program that costs nothing. */
SEC("xdp")
int xdp_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}
