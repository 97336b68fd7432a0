// SPDX-License-Identifier: Apache-2.0
/* Dropwatch: why the kernel throws packets away, counted per drop reason.
 *
 * Attached to the kfree_skb raw tracepoint, which fires whenever the kernel frees a
 * socket buffer it did not consume: trace_kfree_skb(skb, location, reason[, rx_sk]).
 * Since Linux 5.17 the third argument is an enum skb_drop_reason (NO_SOCKET,
 * NETFILTER_DROP, XDP, TCP_CSUM, ...); the counter of that reason, per CPU, goes up.
 * Nothing else is read: no packet bytes, no stack.  User space
 * (anyedge.edge.exporter) sums the CPUs and names the reasons from the running
 * kernel's BTF, at scrape time.
 *
 * A raw tracepoint (not a kprobe) because it is a stable hook that does not need
 * kprobes, and raw (not tp_btf) so the program loads without the attach-time BTF
 * lookup; on a kernel older than 5.17 the tracepoint has two arguments and attaching
 * a program that reads the third fails (EINVAL), which the loader reports.
 *
 * Reasons at or above DW_MAX_REASONS (a subsystem's reasons: the high 16 bits name
 * the subsystem, mac80211 or openvswitch) are counted together in the last slot.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define DW_MAX_REASONS 512

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DW_MAX_REASONS);
	__type(key, __u32);
	__type(value, __u64);
} dw_drops SEC(".maps");

SEC("raw_tp/kfree_skb")
int dropwatch(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 reason = (__u32)ctx->args[2];
	__u64 *n;

	if (reason >= DW_MAX_REASONS)
		reason = DW_MAX_REASONS - 1;
	n = bpf_map_lookup_elem(&dw_drops, &reason);
	if (n)
		*n += 1; /* per CPU: no other CPU writes this slot, and the kernel never
			  * nests this program in itself on one CPU (a drop in an interrupt
			  * that comes while it runs is skipped; recent kernels count such
			  * runs as the program's "missed") */
	return 0;
}
