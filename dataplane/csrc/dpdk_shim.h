/* The C side of Sluice's DPDK device: DPDK's fast path (rte_eth_rx_burst, rte_eth_tx_burst,
 * rte_pktmbuf_*) is made of static inline functions that no library exports, so these thin
 * wrappers give them a symbol; port set-up lives here too so that Rust never builds DPDK's
 * large configuration structs. bindgen reads this header (with DPDK's own) for the Rust
 * declarations: see dataplane/build.rs and docs/decisions/0011-dpdk-bindings.md. */
#ifndef SLUICE_DPDK_SHIM_H
#define SLUICE_DPDK_SHIM_H

#include <stddef.h>
#include <stdint.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

/* rte_errno of the calling thread (a per-lcore variable, not reachable from Rust). */
int sluice_dpdk_errno(void);

/* The calling thread's lcore id, or LCORE_ID_ANY (UINT32_MAX) when it has none. */
unsigned int sluice_dpdk_lcore_id(void);

/* Receives up to n frames of queue q of port into pkts; returns how many. */
uint16_t sluice_dpdk_rx_burst(uint16_t port, uint16_t q, struct rte_mbuf **pkts, uint16_t n);

/* Queues up to n frames on queue q of port; returns how many the driver took (those mbufs
 * belong to the driver from then on). */
uint16_t sluice_dpdk_tx_burst(uint16_t port, uint16_t q, struct rte_mbuf **pkts, uint16_t n);

/* One mbuf from mp (reset, empty), or NULL when the pool is empty. */
struct rte_mbuf *sluice_dpdk_mbuf_alloc(struct rte_mempool *mp);

/* Returns a whole mbuf chain to its pool. */
void sluice_dpdk_mbuf_free(struct rte_mbuf *m);

/* The first segment's data, its length and the chain's segment count. */
uint8_t *sluice_dpdk_mbuf_data(struct rte_mbuf *m, uint16_t *len, uint16_t *segs);

/* Room after the (empty) data of a fresh mbuf, in bytes. */
uint16_t sluice_dpdk_mbuf_room(const struct rte_mbuf *m);

/* Sets a one-segment mbuf's data and packet length. */
void sluice_dpdk_mbuf_set_len(struct rte_mbuf *m, uint16_t len);

/* What sluice_dpdk_port_setup learnt about the port. */
struct sluice_dpdk_port_info {
    char driver[64];
    uint16_t max_rx_queues;
    uint16_t max_tx_queues;
    uint64_t rss_hf; /* hash functions enabled: 0 when RSS is off */
    int socket;
    uint8_t mac[6];
};

/* Configures queues rx/tx queue pairs of port with rx_desc/tx_desc descriptors each
 * (adjusted to the driver's limits), receive buffers from mp, RSS over IPv4/TCP when
 * queues > 1 and the driver offers it, then starts the port. Returns 0, or a negative errno
 * with the failing step's name in *step. On failure the port is left stopped. */
int sluice_dpdk_port_setup(uint16_t port, uint16_t queues, uint16_t rx_desc, uint16_t tx_desc,
                           struct rte_mempool *mp, int promiscuous,
                           struct sluice_dpdk_port_info *info, const char **step);

/* The port's RSS key (up to *key_len bytes; set to the key's size) and redirection table
 * (up to *reta_len entries; set to the table's size). Returns 0 or a negative errno. */
int sluice_dpdk_port_rss(uint16_t port, uint8_t *key, uint8_t *key_len, uint16_t *reta,
                         uint16_t *reta_len);

#endif
