// SPDX-License-Identifier: Apache-2.0
/* A packet generator in the kernel, for benchmarks: run `trafficgen` with
 * BPF_PROG_TEST_RUN in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES, Linux 5.18) and
 * every repetition sends the given frame out of the interface tg_config names
 * (bpf_redirect), as xdp-trafficgen does: millions of frames a second from one call,
 * no socket and no socket buffer on the sending side.
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

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
