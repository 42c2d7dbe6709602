/* See dpdk_shim.h. */
#include "dpdk_shim.h"

#include <string.h>

int sluice_dpdk_errno(void) { return rte_errno; }

unsigned int sluice_dpdk_lcore_id(void) { return rte_lcore_id(); }

uint16_t sluice_dpdk_rx_burst(uint16_t port, uint16_t q, struct rte_mbuf **pkts, uint16_t n)
{
    return rte_eth_rx_burst(port, q, pkts, n);
}

uint16_t sluice_dpdk_tx_burst(uint16_t port, uint16_t q, struct rte_mbuf **pkts, uint16_t n)
{
    return rte_eth_tx_burst(port, q, pkts, n);
}

struct rte_mbuf *sluice_dpdk_mbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

void sluice_dpdk_mbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

uint8_t *sluice_dpdk_mbuf_data(struct rte_mbuf *m, uint16_t *len, uint16_t *segs)
{
    *len = rte_pktmbuf_data_len(m);
    *segs = m->nb_segs;
    return rte_pktmbuf_mtod(m, uint8_t *);
}

uint16_t sluice_dpdk_mbuf_room(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }

void sluice_dpdk_mbuf_set_len(struct rte_mbuf *m, uint16_t len)
{
    m->data_len = len;
    m->pkt_len = len;
}

int sluice_dpdk_port_setup(uint16_t port, uint16_t queues, uint16_t rx_desc, uint16_t tx_desc,
                           struct rte_mempool *mp, int promiscuous,
                           struct sluice_dpdk_port_info *info, const char **step)
{
    struct rte_eth_dev_info dev;
    struct rte_eth_conf conf;
    struct rte_ether_addr mac;
    unsigned int socket;
    uint16_t q;
    int ret;

    memset(info, 0, sizeof(*info));
    *step = "rte_eth_dev_info_get";
    ret = rte_eth_dev_info_get(port, &dev);
    if (ret != 0)
        return ret;
    if (dev.driver_name != NULL)
        strncpy(info->driver, dev.driver_name, sizeof(info->driver) - 1);
    info->max_rx_queues = dev.max_rx_queues;
    info->max_tx_queues = dev.max_tx_queues;
    info->socket = rte_eth_dev_socket_id(port);
    socket = info->socket < 0 ? (unsigned int)SOCKET_ID_ANY : (unsigned int)info->socket;
    if (queues == 0 || queues > dev.max_rx_queues || queues > dev.max_tx_queues) {
        *step = "queue count (more than the port's maximum)";
        return -EINVAL;
    }

    memset(&conf, 0, sizeof(conf));
    if (queues > 1 && (dev.flow_type_rss_offloads & (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP)) != 0) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_key = NULL; /* keep the driver's key */
        conf.rx_adv_conf.rss_conf.rss_hf =
            dev.flow_type_rss_offloads & (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP);
        info->rss_hf = conf.rx_adv_conf.rss_conf.rss_hf;
    }
    *step = "rte_eth_dev_configure";
    ret = rte_eth_dev_configure(port, queues, queues, &conf);
    if (ret != 0)
        return ret;
    *step = "rte_eth_dev_adjust_nb_rx_tx_desc";
    ret = rte_eth_dev_adjust_nb_rx_tx_desc(port, &rx_desc, &tx_desc);
    if (ret != 0)
        return ret;
    for (q = 0; q < queues; q++) {
        *step = "rte_eth_rx_queue_setup";
        ret = rte_eth_rx_queue_setup(port, q, rx_desc, socket, NULL, mp);
        if (ret != 0)
            return ret;
        *step = "rte_eth_tx_queue_setup";
        ret = rte_eth_tx_queue_setup(port, q, tx_desc, socket, NULL);
        if (ret != 0)
            return ret;
    }
    *step = "rte_eth_dev_start";
    ret = rte_eth_dev_start(port);
    if (ret != 0)
        return ret;
    if (promiscuous) {
        *step = "rte_eth_promiscuous_enable";
        ret = rte_eth_promiscuous_enable(port);
        if (ret != 0 && ret != -ENOTSUP) {
            rte_eth_dev_stop(port);
            return ret;
        }
    }
    *step = "rte_eth_macaddr_get";
    ret = rte_eth_macaddr_get(port, &mac);
    if (ret != 0) {
        rte_eth_dev_stop(port);
        return ret;
    }
    memcpy(info->mac, mac.addr_bytes, 6);
    *step = "";
    return 0;
}

int sluice_dpdk_port_rss(uint16_t port, uint8_t *key, uint8_t *key_len, uint16_t *reta,
                         uint16_t *reta_len)
{
    struct rte_eth_dev_info dev;
    struct rte_eth_rss_conf rss;
    struct rte_eth_rss_reta_entry64 groups[RTE_ETH_RSS_RETA_SIZE_512 / RTE_ETH_RETA_GROUP_SIZE];
    uint16_t size, i;
    int ret;

    ret = rte_eth_dev_info_get(port, &dev);
    if (ret != 0)
        return ret;
    size = dev.reta_size;
    if (size == 0 || size > RTE_ETH_RSS_RETA_SIZE_512 || dev.hash_key_size == 0 ||
        dev.hash_key_size > *key_len)
        return -ENOTSUP;
    memset(&rss, 0, sizeof(rss));
    rss.rss_key = key;
    rss.rss_key_len = dev.hash_key_size;
    ret = rte_eth_dev_rss_hash_conf_get(port, &rss);
    if (ret != 0)
        return ret;
    if (rss.rss_hf == 0)
        return -ENOTSUP;
    *key_len = rss.rss_key_len;
    memset(groups, 0, sizeof(groups));
    for (i = 0; i < size / RTE_ETH_RETA_GROUP_SIZE + (size % RTE_ETH_RETA_GROUP_SIZE != 0); i++)
        groups[i].mask = UINT64_MAX;
    ret = rte_eth_dev_rss_reta_query(port, groups, size);
    if (ret != 0)
        return ret;
    if (size > *reta_len)
        return -ENOSPC;
    for (i = 0; i < size; i++)
        reta[i] = groups[i / RTE_ETH_RETA_GROUP_SIZE].reta[i % RTE_ETH_RETA_GROUP_SIZE];
    *reta_len = size;
    return 0;
}
