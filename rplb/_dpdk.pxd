# cython: language_level=3
# DPDK declarations only (after uvloop's includes/uv.pxd): no logic here.
# Only the fields rplb reads or writes are declared; Cython takes the real
# layouts from the headers.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdio cimport FILE


cdef extern from "rte_errno.h" nogil:
    int rte_errno
    const char *rte_strerror(int errnum)


cdef extern from "rte_log.h" nogil:
    int rte_openlog_stream(FILE *f)
    int rte_log_register(const char *name)
    int rte_log_get_level(uint32_t logtype)
    int rte_log_set_level(uint32_t logtype, uint32_t level)
    uint32_t RTE_LOG_CRIT
    uint32_t RTE_LOG_DEBUG


cdef extern from "rte_eal.h" nogil:
    int rte_eal_init(int argc, char **argv)
    int rte_eal_cleanup()


cdef extern from "rte_dev.h" nogil:
    int rte_eal_hotplug_add(const char *busname, const char *devname, const char *drvargs)
    int rte_eal_hotplug_remove(const char *busname, const char *devname)


cdef extern from "rte_pdump.h" nogil:
    int rte_pdump_init()
    int rte_pdump_uninit()


cdef extern from "rte_lcore.h" nogil:
    unsigned int RTE_MAX_LCORE
    unsigned int rte_lcore_count()
    unsigned int rte_get_main_lcore()
    unsigned int rte_get_next_lcore(unsigned int i, int skip_main, int wrap)
    unsigned int rte_lcore_to_socket_id(unsigned int lcore_id)
    unsigned int rte_socket_id()


cdef extern from "rte_launch.h" nogil:
    ctypedef int (*lcore_function_t)(void *)
    int rte_eal_remote_launch(lcore_function_t *f, void *arg, unsigned int worker_id)
    int rte_eal_wait_lcore(unsigned int worker_id)


cdef extern from "rte_mempool.h" nogil:
    struct rte_mempool:
        char *name
        unsigned int size
    unsigned int rte_mempool_avail_count(const rte_mempool *mp)
    unsigned int rte_mempool_in_use_count(const rte_mempool *mp)
    void rte_mempool_free(rte_mempool *mp)


cdef extern from "rte_mbuf.h" nogil:
    uint16_t RTE_MBUF_DEFAULT_BUF_SIZE
    rte_mempool *rte_pktmbuf_pool_create(const char *name, unsigned int n,
                                         unsigned int cache_size, uint16_t priv_size,
                                         uint16_t data_room_size, int socket_id)


cdef extern from "rte_ether.h" nogil:
    struct rte_ether_addr:
        uint8_t addr_bytes[6]


cdef extern from "rte_ethdev.h" nogil:
    uint64_t RTE_ETH_RX_OFFLOAD_IPV4_CKSUM
    uint64_t RTE_ETH_RX_OFFLOAD_UDP_CKSUM
    uint64_t RTE_ETH_RX_OFFLOAD_TCP_CKSUM
    uint64_t RTE_ETH_TX_OFFLOAD_IPV4_CKSUM
    uint64_t RTE_ETH_TX_OFFLOAD_UDP_CKSUM
    uint64_t RTE_ETH_TX_OFFLOAD_TCP_CKSUM
    uint64_t RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE
    int RTE_ETH_NAME_MAX_LEN

    struct rte_eth_txconf:
        uint64_t offloads
    struct rte_eth_rxconf:
        uint64_t offloads
    struct rte_eth_desc_lim:
        uint16_t nb_max
        uint16_t nb_min
        uint16_t nb_align
    struct rte_eth_dev_info:
        const char *driver_name
        uint16_t max_rx_queues
        uint16_t max_tx_queues
        uint64_t rx_offload_capa
        uint64_t tx_offload_capa
        rte_eth_rxconf default_rxconf
        rte_eth_txconf default_txconf
        rte_eth_desc_lim rx_desc_lim
        rte_eth_desc_lim tx_desc_lim
    struct rte_eth_rxmode:
        uint64_t offloads
    struct rte_eth_txmode:
        uint64_t offloads
    struct rte_eth_conf:
        rte_eth_rxmode rxmode
        rte_eth_txmode txmode
    struct rte_eth_link:
        uint32_t link_speed
        uint16_t link_duplex
        uint16_t link_autoneg
        uint16_t link_status
    struct rte_eth_stats:
        uint64_t ipackets
        uint64_t opackets
        uint64_t ibytes
        uint64_t obytes
        uint64_t imissed
        uint64_t ierrors
        uint64_t oerrors
        uint64_t rx_nombuf

    uint16_t rte_eth_dev_count_avail()
    int rte_eth_dev_is_valid_port(uint16_t port_id)
    int rte_eth_dev_get_name_by_port(uint16_t port_id, char *name)
    int rte_eth_dev_get_port_by_name(const char *name, uint16_t *port_id)
    int rte_eth_dev_socket_id(uint16_t port_id)
    int rte_eth_dev_info_get(uint16_t port_id, rte_eth_dev_info *dev_info)
    int rte_eth_dev_configure(uint16_t port_id, uint16_t nb_rx_queue, uint16_t nb_tx_queue,
                              const rte_eth_conf *eth_conf)
    int rte_eth_dev_adjust_nb_rx_tx_desc(uint16_t port_id, uint16_t *nb_rx_desc,
                                         uint16_t *nb_tx_desc)
    int rte_eth_rx_queue_setup(uint16_t port_id, uint16_t rx_queue_id, uint16_t nb_rx_desc,
                               unsigned int socket_id, const rte_eth_rxconf *rx_conf,
                               rte_mempool *mb_pool)
    int rte_eth_tx_queue_setup(uint16_t port_id, uint16_t tx_queue_id, uint16_t nb_tx_desc,
                               unsigned int socket_id, const rte_eth_txconf *tx_conf)
    int rte_eth_dev_start(uint16_t port_id)
    int rte_eth_dev_stop(uint16_t port_id)
    int rte_eth_dev_close(uint16_t port_id)
    int rte_eth_promiscuous_enable(uint16_t port_id)
    int rte_eth_link_get_nowait(uint16_t port_id, rte_eth_link *link)
    int rte_eth_stats_get(uint16_t port_id, rte_eth_stats *stats)
    int rte_eth_stats_reset(uint16_t port_id)
    int rte_eth_macaddr_get(uint16_t port_id, rte_ether_addr *mac_addr)
