// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Sluice's XDP steering program.
 *
 * Redirects to the AF_XDP socket of the receiving queue only the frames that belong to the
 * stack: ARP whose target protocol address is the stack's IPv4 address, ICMP to that address,
 * and TCP to that address (optionally only to the destination ports set in `tcp_ports`).
 * Everything else gets XDP_PASS, so the host's own traffic on the same NIC is untouched.
 *
 * Frames for the stack that arrive on a queue with no socket in `xsks` are dropped (and
 * counted), rather than handed to a kernel that does not own the address.
 *
 * Maps (read and written from Rust, see dataplane/src/xdp.rs):
 *   xsks      XSKMAP  queue index -> AF_XDP socket
 *   config    ARRAY   one `struct sluice_config`
 *   tcp_ports ARRAY   65536-bit bitmap of TCP destination ports (u32 words), used when
 *                     config.port_filter != 0
 *   counters  PERCPU_ARRAY  COUNTER_REDIRECTED, COUNTER_PASSED, COUNTER_DROPPED (u64 each)
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_QUEUES 256
#define PORT_WORDS (65536 / 32)

enum counter {
	COUNTER_REDIRECTED = 0,
	COUNTER_PASSED = 1,
	COUNTER_DROPPED = 2,
	COUNTER_MAX = 3,
};

/* Keep in sync with `XdpConfig` in dataplane/src/xdp.rs. */
struct sluice_config {
	__u32 ipv4;        /* stack address, network byte order; 0 = redirect nothing */
	__u32 port_filter; /* non-zero: TCP only to ports set in tcp_ports */
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sluice_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PORT_WORDS);
	__type(key, __u32);
	__type(value, __u32);
} tcp_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* ARP for Ethernet/IPv4, as laid out on the wire (RFC 826). */
struct arp_eth_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 oper;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
} __attribute__((packed));

static __always_inline void count(__u32 which)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &which);
	if (value)
		*value += 1;
}

static __always_inline int pass(void)
{
	count(COUNTER_PASSED);
	return XDP_PASS;
}

static __always_inline int to_stack(struct xdp_md *ctx)
{
	__u32 queue = ctx->rx_queue_index;

	if (!bpf_map_lookup_elem(&xsks, &queue)) {
		count(COUNTER_DROPPED);
		return XDP_DROP;
	}
	count(COUNTER_REDIRECTED);
	return bpf_redirect_map(&xsks, queue, XDP_DROP);
}

static __always_inline int tcp_port_wanted(__u16 port)
{
	__u32 word = port >> 5;
	__u32 *bits = bpf_map_lookup_elem(&tcp_ports, &word);

	if (!bits)
		return 0;
	return (*bits >> (port & 31)) & 1;
}

SEC("xdp")
int sluice_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0;
	struct sluice_config *cfg;

	if ((void *)(eth + 1) > data_end)
		return pass();

	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || cfg->ipv4 == 0)
		return pass();

	if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
		struct arp_eth_ipv4 *arp = (void *)(eth + 1);
		__u32 tpa;

		if ((void *)(arp + 1) > data_end)
			return pass();
		if (arp->htype != bpf_htons(1) || arp->ptype != bpf_htons(ETH_P_IP) ||
		    arp->hlen != 6 || arp->plen != 4)
			return pass();
		__builtin_memcpy(&tpa, arp->tpa, 4);
		if (tpa != cfg->ipv4)
			return pass();
		return to_stack(ctx);
	}

	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return pass();

	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return pass();
	if (ip->version != 4 || ip->daddr != cfg->ipv4)
		return pass();

	if (ip->protocol == IPPROTO_ICMP)
		return to_stack(ctx);
	if (ip->protocol != IPPROTO_TCP)
		return pass();
	if (!cfg->port_filter)
		return to_stack(ctx);

	/* A non-first fragment carries no TCP header to filter on. */
	if (ip->frag_off & bpf_htons(0x1fff))
		return pass();
	__u32 ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return pass();
	struct tcphdr *tcp = (void *)ip + ihl;
	if ((void *)(tcp + 1) > data_end)
		return pass();
	if (!tcp_port_wanted(bpf_ntohs(tcp->dest)))
		return pass();
	return to_stack(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
