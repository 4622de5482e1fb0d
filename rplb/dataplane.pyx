# cython: language_level=3, boundscheck=False, wraparound=False
"""The thin bridge between the Python control plane and the C fast path.

Owns the DPDK resources (EAL, mempools, ports, workers, load-balancer
state), one Python object per resource with an idempotent ``close()``.
Every DPDK error style (negative errno, -1 with rte_errno, NULL with
rte_errno) becomes :class:`rplb.errors.RplbError`.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.errno cimport ENOSPC
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdio cimport FILE
from libc.string cimport memset

cimport numpy as cnp
import numpy as np

from rplb._dpdk cimport *
from rplb._csrc cimport *
from rplb.errors import RplbError

cnp.import_array()


# ---- the C side's contract (csrc/contract.c): rplb/contract.py reads it ------

def constants():
    """{name: value} of every limit and encoding constant (rplb_constants)."""
    result = {}
    cdef int i = 0
    while rplb_constants[i].name != NULL:
        result[rplb_constants[i].name.decode()] = rplb_constants[i].value
        i += 1
    return result


def layout():
    """[(struct, field, offset, size, count, kind, type)] of the structs
    Python reads or writes as numpy arrays (rplb_layout): kind 'u'/'i' for
    integers of size bytes, 's' for a struct named by type."""
    fields = []
    cdef int i = 0
    while rplb_layout[i].struct_name != NULL:
        entry = &rplb_layout[i]
        fields.append((entry.struct_name.decode(), entry.field.decode(), entry.offset,
                       entry.size, entry.count, chr(entry.kind),
                       entry.type.decode() if entry.type != NULL else None))
        i += 1
    return fields


def struct_sizes():
    """{struct name: sizeof} of the structs in layout()."""
    result = {}
    cdef int i = 0
    while rplb_struct_sizes[i].name != NULL:
        result[rplb_struct_sizes[i].name.decode()] = rplb_struct_sizes[i].size
        i += 1
    return result


cdef tuple _names(const char **table, int n):
    return tuple(table[i].decode() if table[i] != NULL else None for i in range(n))


def enum_names():
    """The names of the C enums, in enum order (stats.c)."""
    return {"drops": _names(<const char **>rplb_drop_names, RPLB_DROP_REASONS),
            "events": _names(<const char **>rplb_event_names, RPLB_EVENTS),
            "flow_states": _names(<const char **>rplb_flow_state_names, RPLB_FLOW_STATES),
            "sides": _names(<const char **>rplb_side_names, RPLB_SIDES)}


FLOW_STATE_NAMES = enum_names()["flow_states"]


def backend_id(uint32_t slot, uint32_t generation):
    """rplb_backend_id(): the id of a slot's backend in a generation
    (generation modulo BACKEND_GENERATIONS)."""
    return rplb_backend_id(slot, generation)


def backend_slot(uint32_t backend_id):
    return rplb_backend_slot(backend_id)


def backend_generation(uint32_t backend_id):
    return rplb_backend_generation(backend_id)


def backend_slots(backend_ids):
    """rplb_backend_slot() of each id of a uint32 array."""
    cdef cnp.ndarray ids = np.ascontiguousarray(backend_ids, dtype=np.uint32)
    cdef cnp.ndarray slots = np.empty(ids.shape[0], dtype=np.uint32)
    cdef const uint32_t *source = <const uint32_t *>ids.data
    cdef uint32_t *target = <uint32_t *>slots.data
    cdef Py_ssize_t i
    for i in range(ids.shape[0]):
        target[i] = rplb_backend_slot(source[i])
    return slots


def tables_memory(uint32_t n_services, uint32_t n_backends):
    """Bytes of DPDK heap one table generation of this size takes, its
    services' Maglev tables apart (maglev_memory)."""
    return rplb_lb_tables_memory(n_services, n_backends)


def maglev_memory(uint32_t size, uint32_t n_backends):
    """Bytes of DPDK heap one service's Maglev table takes."""
    return rplb_lb_maglev_memory(size, n_backends)


def handoff_memory(unsigned int n_workers):
    """Bytes the rings between n_workers workers take, with each worker's
    handoff state (0 for one worker; no EAL needed)."""
    return rplb_handoff_memory(n_workers)


def worker_memory(uint32_t flow_table_size, fragments=None):
    """Bytes one worker's load-balancing state takes: its flow table of
    flow_table_size flows, its fragment state (fragments: an
    rplb.config.Fragments, None for the defaults; the held fragments'
    mbufs come from the pool), its counters, its flow sample (no EAL
    needed)."""
    datagrams, held, _ = _fragment_bounds(fragments)
    return rplb_lb_worker_memory(flow_table_size, datagrams, held)


def _fragment_bounds(fragments):
    """(datagrams, held, timeout) of an rplb.config.Fragments, or the C
    defaults for None."""
    if fragments is None:
        return (RPLB_FRAGMENT_DEFAULT_DATAGRAMS, RPLB_FRAGMENT_DEFAULT_HELD,
                RPLB_FRAGMENT_DEFAULT_TIMEOUT_S)
    return fragments.datagrams, fragments.held, fragments.timeout


# ---- errors ----------------------------------------------------------------

cdef int check_rc(int rc, str what) except -1:
    """Negative-errno style (ethdev)."""
    if rc < 0:
        raise RplbError(-rc, what, rte_strerror(-rc).decode(errors="replace"))
    return rc


cdef int raise_rte_errno(str what) except -1:
    """-1 or NULL with rte_errno style (EAL, mempool, hash)."""
    cdef int err = rte_errno
    detail = rte_strerror(err).decode(errors="replace") if err else ""
    raise RplbError(err, what, detail)


# ---- EAL -------------------------------------------------------------------

cdef bint _eal_initialized = False
cdef list _eal_argv_keepalive = []


def eal_init(argv):
    """Initialise DPDK's EAL with ``argv`` (``argv[0]`` is the program name).

    Once per process: DPDK refuses a second initialisation even after
    cleanup.  Raises RplbError (EALREADY on a second call).
    """
    global _eal_initialized
    if _eal_initialized:
        raise RplbError(114, "EAL is already initialised in this process")
    encoded = [str(a).encode() for a in argv]
    cdef int argc = len(encoded)
    cdef char **c_argv = <char **>PyMem_Malloc((argc + 1) * sizeof(char *))
    if c_argv == NULL:
        raise MemoryError()
    cdef int rc
    try:
        for i, arg in enumerate(encoded):
            c_argv[i] = arg
        c_argv[argc] = NULL
        # EAL may keep pointers into argv: keep the bytes alive.
        _eal_argv_keepalive.extend(encoded)
        with nogil:
            rc = rte_eal_init(argc, c_argv)
        if rc < 0:
            raise_rte_errno("cannot initialise DPDK's EAL")
    finally:
        PyMem_Free(c_argv)
    _eal_initialized = True
    return rc


def eal_cleanup():
    """Release EAL resources (idempotent).  DPDK cannot be re-initialised."""
    global _eal_initialized
    if _eal_initialized:
        _eal_initialized = False
        rte_eal_cleanup()


def pdump_init():
    """Let dpdk-dumpcap capture on this process's ports (DPDK's packet-capture
    framework; it needs multi-process support: a primary with shared memory,
    i.e. hugepages and no --no-shconf).  Raises RplbError where unsupported."""
    if rte_pdump_init() < 0:
        raise_rte_errno("packet capture (pdump) is unavailable")


def pdump_uninit():
    rte_pdump_uninit()


def eal_is_initialized():
    return _eal_initialized


def main_lcore():
    return rte_get_main_lcore()


def worker_lcores():
    """Lcore ids available for workers (every enabled lcore but the main one)."""
    cdef unsigned int lcore = rte_get_next_lcore(<unsigned int>-1, 1, 0)
    result = []
    while lcore < RTE_MAX_LCORE:
        result.append(lcore)
        lcore = rte_get_next_lcore(lcore, 1, 0)
    return result


def port_count():
    return rte_eth_dev_count_avail()


def port_exists(int port_id):
    return 0 <= port_id < 65535 and rte_eth_dev_is_valid_port(<uint16_t>port_id) != 0


def port_ids():
    return [p for p in range(RTE_MAX_LCORE if RTE_MAX_LCORE > 1024 else 1024)
            if rte_eth_dev_is_valid_port(<uint16_t>p)]


def vdev_add(str name, str args, str quiet_log_type=None):
    """Hot-plug the virtual device name (e.g. "net_tap_rplb") with its
    driver arguments (e.g. "iface=rplb0") after EAL's start, as --vdev
    would have; returns the id of the port it creates.  quiet_log_type: a
    DPDK log type (e.g. "pmd.net.tap") held to critical messages during
    the probe, unless debug messages were asked for.  Raises RplbError."""
    cdef uint16_t port_id
    cdef int log_type = -1, level = 0
    if quiet_log_type is not None:
        log_type = rte_log_register(quiet_log_type.encode())
        if log_type >= 0:
            level = rte_log_get_level(log_type)
            if level >= <int>RTE_LOG_DEBUG:
                log_type = -1
            else:
                rte_log_set_level(log_type, RTE_LOG_CRIT)
    try:
        rc = rte_eal_hotplug_add(b"vdev", name.encode(), args.encode())
    finally:
        if log_type >= 0:
            rte_log_set_level(log_type, level)
    check_rc(rc, f"cannot create the virtual device {name},{args}")
    rc = rte_eth_dev_get_port_by_name(name.encode(), &port_id)
    if rc < 0:
        rte_eal_hotplug_remove(b"vdev", name.encode())
        check_rc(rc, f"the virtual device {name} made no port")
    return port_id


def vdev_remove(str name):
    """Remove a virtual device vdev_add created (close its port first)."""
    check_rc(rte_eal_hotplug_remove(b"vdev", name.encode()),
             f"cannot remove the virtual device {name}")


# ---- Maglev ----------------------------------------------------------------

def maglev_fill(offset, skip, weight, unsigned int size):
    """The sequential weighted Maglev fill in C (csrc/maglev_fill.c); needs no
    EAL.  Arrays are per backend, in (ip, port) order, all weights > 0.
    Returns int32 owners (indices into the arrays) of the size entries."""
    cdef cnp.ndarray o = np.ascontiguousarray(offset, dtype=np.uint32)
    cdef cnp.ndarray s = np.ascontiguousarray(skip, dtype=np.uint32)
    cdef cnp.ndarray w = np.ascontiguousarray(weight, dtype=np.uint32)
    cdef cnp.ndarray table = np.empty(size, dtype=np.int32)
    cdef uint32_t n = o.shape[0]
    cdef int rc
    if s.shape[0] != n or w.shape[0] != n:
        raise ValueError("offset, skip and weight must have the same length")
    with nogil:
        rc = rplb_maglev_fill(<const uint32_t *>o.data, <const uint32_t *>s.data,
                              <const uint32_t *>w.data, n, size, <int32_t *>table.data)
    if rc < 0:
        raise ValueError(f"maglev fill: invalid input ({-rc})")
    return table


# ---- Prometheus text -------------------------------------------------------

def metrics_family_bound(Py_ssize_t name_length, const uint64_t[::1] label_offsets):
    """The most bytes write_metrics_family writes for these rows."""
    cdef Py_ssize_t rows = label_offsets.shape[0] - 1
    if rows < 0:
        raise ValueError("label_offsets needs rows + 1 entries")
    return rplb_metrics_family_bound(name_length, &label_offsets[0], rows)


def write_metrics_family(unsigned char[::1] out, Py_ssize_t at, const unsigned char[::1] name,
                         const unsigned char[::1] labels, const uint64_t[::1] label_offsets,
                         const int64_t[::1] values):
    """One metric family's sample lines in C (csrc/metrics_text.c), without
    the GIL: for each row i, name, labels[label_offsets[i]:label_offsets[i +
    1]], a space, values[i] and a newline, written into out from at.
    Returns where they end.  ValueError if the arrays disagree or out has
    no room for metrics_family_bound() bytes from at."""
    cdef Py_ssize_t rows = values.shape[0]
    cdef Py_ssize_t capacity = out.shape[0] - at
    cdef int64_t written
    if label_offsets.shape[0] != rows + 1:
        raise ValueError(f"{rows} values need {rows + 1} label offsets, "
                         f"not {label_offsets.shape[0]}")
    if not 0 <= at <= out.shape[0]:
        raise ValueError(f"position {at} is outside the buffer ({out.shape[0]} bytes)")
    if rows == 0:
        return at
    if name.shape[0] == 0:
        raise ValueError("a metric family needs a name")
    # An empty view has no element to point at (C then reads no label byte).
    cdef const char *label_data = b""
    if labels.shape[0]:
        label_data = <const char *>&labels[0]
    with nogil:
        written = rplb_metrics_write_family(
            <char *>&out[0] + at if capacity else NULL, capacity,
            <const char *>&name[0], name.shape[0], label_data, labels.shape[0],
            &label_offsets[0], &values[0], rows)
    if written == -ENOSPC:
        raise ValueError(f"{capacity} bytes cannot hold {rows} samples of "
                         f"{bytes(name).decode(errors='replace')}")
    if written < 0:
        raise ValueError("label offsets out of order or past the labels")
    return at + written


# ---- mempool ---------------------------------------------------------------

cdef class Mempool:
    """A packet mbuf pool.  ``in_use`` counts mbufs not back in the pool."""

    cdef rte_mempool *pool
    cdef readonly str name
    cdef readonly unsigned int size

    def __cinit__(self, str name, unsigned int n_mbufs, unsigned int cache_size=256,
                  int socket_id=-1):
        self.pool = NULL
        self.name = name
        if socket_id < 0:
            socket_id = rte_socket_id()
        cache_size = min(cache_size, n_mbufs // 2, 512)
        self.pool = rte_pktmbuf_pool_create(name.encode(), n_mbufs, cache_size, 0,
                                            RTE_MBUF_DEFAULT_BUF_SIZE, socket_id)
        if self.pool == NULL:
            raise_rte_errno(f"cannot create mbuf pool {name!r} of {n_mbufs} mbufs "
                            "(too little memory? raise -m)")
        self.size = self.pool.size

    @property
    def available(self):
        self._check_open()
        return rte_mempool_avail_count(self.pool)

    @property
    def in_use(self):
        self._check_open()
        return rte_mempool_in_use_count(self.pool)

    cdef _check_open(self):
        if self.pool == NULL:
            raise RplbError(9, f"mbuf pool {self.name!r} is closed")

    def close(self):
        if self.pool != NULL:
            rte_mempool_free(self.pool)
            self.pool = NULL

    def __dealloc__(self):
        # Freeing a pool whose mbufs a port still holds would corrupt memory:
        # the owner (Appliance) closes ports first, then pools.
        pass


# ---- ports -----------------------------------------------------------------

cdef uint64_t TX_CKSUM = (RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM
                          | RTE_ETH_TX_OFFLOAD_UDP_CKSUM)
cdef uint64_t RX_CKSUM = (RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_TCP_CKSUM
                          | RTE_ETH_RX_OFFLOAD_UDP_CKSUM)

_OFFLOAD_NAMES = (
    ("rx_ipv4_cksum", True, RTE_ETH_RX_OFFLOAD_IPV4_CKSUM),
    ("rx_udp_cksum", True, RTE_ETH_RX_OFFLOAD_UDP_CKSUM),
    ("rx_tcp_cksum", True, RTE_ETH_RX_OFFLOAD_TCP_CKSUM),
    ("tx_ipv4_cksum", False, RTE_ETH_TX_OFFLOAD_IPV4_CKSUM),
    ("tx_udp_cksum", False, RTE_ETH_TX_OFFLOAD_UDP_CKSUM),
    ("tx_tcp_cksum", False, RTE_ETH_TX_OFFLOAD_TCP_CKSUM),
)


# The IPv4 frames rte_flow RSS spreads by the client address (steering in
# hardware): every IPv4 type, fragments included, so that a flow's
# fragments follow it.
cdef uint64_t RSS_IPV4_TYPES = (RTE_ETH_RSS_IPV4 | RTE_ETH_RSS_FRAG_IPV4
                                | RTE_ETH_RSS_NONFRAG_IPV4_TCP | RTE_ETH_RSS_NONFRAG_IPV4_UDP
                                | RTE_ETH_RSS_NONFRAG_IPV4_OTHER)


cdef class Port:
    """One ethdev port: configure with one rx and one tx queue per worker,
    start, stop, close."""

    cdef readonly uint16_t port_id
    cdef readonly str name
    cdef readonly str driver
    cdef readonly dict offloads_supported
    cdef readonly bint tx_cksum_offload
    cdef readonly bint rx_cksum_offload
    cdef readonly uint16_t rx_descriptors
    cdef readonly uint16_t tx_descriptors
    cdef readonly dict descriptor_limits
    cdef readonly unsigned int max_queues
    cdef readonly unsigned int queues
    cdef readonly unsigned int reta_size
    cdef readonly bint rss_spreads
    cdef bint started
    cdef bint closed
    cdef Mempool pool
    cdef rte_flow *steering_rule

    def __cinit__(self, int port_id):
        cdef char name[64]
        cdef rte_eth_dev_info info
        if not port_exists(port_id):
            raise RplbError(19, f"port {port_id} does not exist")
        self.port_id = <uint16_t>port_id
        check_rc(rte_eth_dev_get_name_by_port(self.port_id, name), f"port {port_id}: name")
        self.name = name.decode()
        check_rc(rte_eth_dev_info_get(self.port_id, &info), f"port {port_id}: device info")
        self.driver = info.driver_name.decode() if info.driver_name != NULL else "?"
        self.offloads_supported = {
            label: bool((info.rx_offload_capa if rx else info.tx_offload_capa) & flag)
            for label, rx, flag in _OFFLOAD_NAMES}
        # What the PMD accepts per queue (rte_eth_desc_lim): checked before
        # configure() so that a bad count is refused with the limit named.
        self.descriptor_limits = {
            "rx": {"min": info.rx_desc_lim.nb_min, "max": info.rx_desc_lim.nb_max,
                   "align": info.rx_desc_lim.nb_align},
            "tx": {"min": info.tx_desc_lim.nb_min, "max": info.tx_desc_lim.nb_max,
                   "align": info.tx_desc_lim.nb_align}}
        # A worker takes one rx and one tx queue of each port.
        self.max_queues = min(info.max_rx_queues, info.max_tx_queues)
        self.reta_size = info.reta_size
        self.queues = 0
        self.rss_spreads = False
        self.steering_rule = NULL
        self.started = False
        self.closed = False

    def configure(self, Mempool pool, unsigned int rx_descriptors=1024,
                  unsigned int tx_descriptors=1024, bint allow_tx_cksum_offload=True,
                  unsigned int queues=1):
        """Set up queues rx and tx queues (one pair per worker).  TX checksum
        offload (IPv4, TCP, UDP) is enabled when the port has all three and
        it is allowed; RX checksum offload whenever the port has it (the
        engine drops what it flags bad).  With several queues, RSS spreads
        IPv4 over them where the port offers it (so that no worker receives
        everything; the workers steer each frame to its owner anyway)."""
        cdef rte_eth_conf conf
        cdef rte_eth_dev_info info
        cdef rte_eth_txconf txconf
        cdef uint16_t nb_rxd = rx_descriptors, nb_txd = tx_descriptors
        cdef uint16_t queue
        cdef int socket_id = rte_eth_dev_socket_id(self.port_id)
        what = f"port {self.port_id} ({self.name})"
        if socket_id < 0:
            socket_id = rte_socket_id()
        check_rc(rte_eth_dev_info_get(self.port_id, &info), f"{what}: device info")
        memset(&conf, 0, sizeof(conf))
        self.tx_cksum_offload = allow_tx_cksum_offload and (info.tx_offload_capa & TX_CKSUM) == TX_CKSUM
        if self.tx_cksum_offload:
            conf.txmode.offloads |= TX_CKSUM
        conf.rxmode.offloads |= info.rx_offload_capa & RX_CKSUM
        self.rx_cksum_offload = (info.rx_offload_capa & RX_CKSUM) != 0
        if queues < 1 or queues > info.max_rx_queues or queues > info.max_tx_queues:
            raise RplbError(22, f"{what}: {queues} queue pairs asked, the port has at most "
                                f"{min(info.max_rx_queues, info.max_tx_queues)}")
        self.rss_spreads = queues > 1 and (info.flow_type_rss_offloads & RSS_IPV4_TYPES) != 0
        if self.rss_spreads:
            conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS
            conf.rx_adv_conf.rss_conf.rss_hf = info.flow_type_rss_offloads & RSS_IPV4_TYPES
        check_rc(rte_eth_dev_configure(self.port_id, queues, queues, &conf), f"{what}: configure")
        check_rc(rte_eth_dev_adjust_nb_rx_tx_desc(self.port_id, &nb_rxd, &nb_txd),
                 f"{what}: descriptor counts")
        txconf = info.default_txconf
        txconf.offloads = conf.txmode.offloads
        for queue in range(queues):
            check_rc(rte_eth_rx_queue_setup(self.port_id, queue, nb_rxd, socket_id, NULL,
                                            pool.pool), f"{what}: rx queue {queue} setup")
            check_rc(rte_eth_tx_queue_setup(self.port_id, queue, nb_txd, socket_id, &txconf),
                     f"{what}: tx queue {queue} setup")
        self.queues = queues
        self.rx_descriptors = nb_rxd
        self.tx_descriptors = nb_txd
        self.pool = pool

    def steer_by_client(self, bint source, bytes rss_key):
        """Ask the port to spread IPv4 over its queues by one address only,
        the source (frontend: the client's) or the destination (backend:
        the client's too), Toeplitz with rss_key: an rte_flow RSS rule,
        validated, then created.  Returns None once the rule is in place,
        or the port's reason for refusing it (a str)."""
        cdef rte_flow_attr attr
        cdef rte_flow_item pattern[3]
        cdef rte_flow_action actions[2]
        cdef rte_flow_action_rss rss
        cdef rte_flow_error error
        cdef uint16_t queue_ids[1024]
        cdef const uint8_t *key = rss_key
        cdef unsigned int i
        cdef int rc
        if self.steering_rule != NULL:
            return None
        if self.queues < 2 or self.queues > 1024:
            return f"{self.queues} queue(s): nothing to spread"
        memset(&attr, 0, sizeof(attr))
        memset(pattern, 0, sizeof(pattern))
        memset(actions, 0, sizeof(actions))
        memset(&rss, 0, sizeof(rss))
        memset(&error, 0, sizeof(error))
        attr.ingress = 1
        pattern[0].type = RTE_FLOW_ITEM_TYPE_ETH
        pattern[1].type = RTE_FLOW_ITEM_TYPE_IPV4
        pattern[2].type = RTE_FLOW_ITEM_TYPE_END
        for i in range(self.queues):
            queue_ids[i] = i
        rss.func = RTE_ETH_HASH_FUNCTION_TOEPLITZ
        rss.level = 0
        rss.types = RSS_IPV4_TYPES | (RTE_ETH_RSS_L3_SRC_ONLY if source else RTE_ETH_RSS_L3_DST_ONLY)
        rss.key_len = len(rss_key)
        rss.key = key
        rss.queue_num = self.queues
        rss.queue = queue_ids
        actions[0].type = RTE_FLOW_ACTION_TYPE_RSS
        actions[0].conf = &rss
        actions[1].type = RTE_FLOW_ACTION_TYPE_END
        rc = rte_flow_validate(self.port_id, &attr, pattern, actions, &error)
        if rc == 0:
            self.steering_rule = rte_flow_create(self.port_id, &attr, pattern, actions, &error)
            if self.steering_rule != NULL:
                return None
            rc = -rte_errno
        reason = rte_strerror(-rc).decode(errors="replace") if rc < 0 else "refused"
        if error.message != NULL:
            message = error.message.decode(errors="replace")
            if message != reason:
                reason = f"{message} ({reason})"
        return reason

    def remove_steering(self):
        """Destroy the rule steer_by_client created, if any."""
        cdef rte_flow_error error
        if self.steering_rule != NULL:
            rte_flow_destroy(self.port_id, self.steering_rule, &error)
            self.steering_rule = NULL

    def start(self, bint promiscuous=True):
        what = f"port {self.port_id} ({self.name})"
        check_rc(rte_eth_dev_start(self.port_id), f"{what}: start")
        self.started = True
        if promiscuous:
            # A bump in the wire sees frames for every MAC; virtual devices
            # without the notion answer -ENOTSUP, which is fine.
            rc = rte_eth_promiscuous_enable(self.port_id)
            if rc < 0 and rc != -95:
                check_rc(rc, f"{what}: promiscuous mode")

    def link(self):
        cdef rte_eth_link link
        memset(&link, 0, sizeof(link))
        check_rc(rte_eth_link_get_nowait(self.port_id, &link), f"port {self.port_id}: link")
        return {"up": bool(link.link_status), "speed_mbps": link.link_speed,
                "full_duplex": bool(link.link_duplex)}

    def stats(self):
        """The port's own counters (rte_eth_stats)."""
        cdef rte_eth_stats st
        check_rc(rte_eth_stats_get(self.port_id, &st), f"port {self.port_id}: stats")
        return {"ipackets": st.ipackets, "opackets": st.opackets, "ibytes": st.ibytes,
                "obytes": st.obytes, "imissed": st.imissed, "ierrors": st.ierrors,
                "oerrors": st.oerrors, "rx_nombuf": st.rx_nombuf}

    def mac(self):
        cdef rte_ether_addr addr
        check_rc(rte_eth_macaddr_get(self.port_id, &addr), f"port {self.port_id}: mac")
        return ":".join(f"{addr.addr_bytes[i]:02x}" for i in range(6))

    def stop(self):
        if self.started:
            self.started = False
            check_rc(rte_eth_dev_stop(self.port_id), f"port {self.port_id}: stop")

    def close(self):
        """Stop and close (idempotent); a pcap vdev completes its files here."""
        if not self.closed:
            self.remove_steering()
            self.stop()
            self.closed = True
            check_rc(rte_eth_dev_close(self.port_id), f"port {self.port_id}: close")


# ---- load-balancer state ---------------------------------------------------

cdef class MaglevTable:
    """One service's Maglev table in the DPDK heap (struct rplb_maglev),
    shared by the table generations that keep the service unchanged.

    owners: int32 per entry, an index into backend_ids or -1; backend_ids:
    the service's backends (uint32, rplb_backend_id()).  Raises RplbError
    (EINVAL: bad input; ENOMEM; ENODEV before eal_init)."""

    cdef rplb_maglev *table
    cdef readonly unsigned int size
    cdef readonly unsigned int n_backends

    def __cinit__(self, owners, backend_ids):
        cdef cnp.ndarray entries = np.ascontiguousarray(owners, dtype=np.int32)
        cdef cnp.ndarray ids = np.ascontiguousarray(backend_ids, dtype=np.uint32)
        self.table = NULL
        if not _eal_initialized:
            raise RplbError(19, "a Maglev table needs the DPDK heap: initialise EAL first")
        if entries.ndim != 1 or ids.ndim != 1:
            raise RplbError(22, "maglev owners and backend ids must be flat arrays")
        self.table = rplb_maglev_create(<const int32_t *>entries.data, entries.shape[0],
                                        <const uint32_t *>ids.data, ids.shape[0],
                                        rte_socket_id())
        if self.table == NULL:
            raise_rte_errno(f"cannot create a Maglev table of {entries.shape[0]} entries")
        self.size = entries.shape[0]
        self.n_backends = ids.shape[0]

    @property
    def memory(self):
        """Bytes of DPDK heap it takes."""
        return rplb_lb_maglev_memory(self.size, self.n_backends)

    def close(self):
        """Drop this reference (idempotent); the table lives on while
        published generations use it."""
        if self.table != NULL and _eal_initialized:
            rplb_maglev_release(self.table)
        # After eal_cleanup the DPDK heap is gone, and the table with it.
        self.table = NULL

    def __dealloc__(self):
        self.close()


cdef _check_spec_array(str what, object array, object dtype):
    if not isinstance(array, np.ndarray):
        raise RplbError(22, f"publish: {what} must be a numpy array, "
                            f"not {type(array).__name__}")
    if array.dtype != dtype:
        raise RplbError(22, f"publish: {what} has dtype {array.dtype}, not the C struct's "
                            f"{dtype} (build it with rplb.contract's dtypes)")
    if array.ndim != 1 or not array.flags.c_contiguous:
        raise RplbError(22, f"publish: {what} must be a flat, C-contiguous array")


def _spec_dtypes():
    from rplb import contract
    return contract.DTYPES["rplb_service_spec"], contract.DTYPES["rplb_backend_spec"]


cdef class LoadBalancer:
    """Shared state of the load-balancing engine (tables, RCU, flow tables)."""

    cdef rplb_lb *lb
    cdef readonly unsigned int flow_table_size
    cdef readonly list lcores       # of the workers, by their index
    # (datagrams, held, timeout) of each worker's fragment state.
    cdef readonly tuple fragment_bounds
    cdef object _service_dtype
    cdef object _backend_dtype

    def __cinit__(self, unsigned int flow_table_size, timeouts, unsigned int max_workers=1,
                  int socket_id=-1, fragments=None):
        cdef rplb_lb_params params
        self.lb = NULL
        memset(&params, 0, sizeof(params))
        params.flow_table_size = flow_table_size
        params.max_workers = max_workers
        params.socket_id = rte_socket_id() if socket_id < 0 else socket_id
        self.fragment_bounds = tuple(_fragment_bounds(fragments))
        (params.fragment_datagrams, params.fragment_held,
         params.fragment_timeout_s) = self.fragment_bounds
        for i, value in enumerate(_timeouts_tuple(timeouts)):
            params.timeout_s[i] = value
        self.lb = rplb_lb_create(&params)
        if self.lb == NULL:
            raise_rte_errno("cannot create the load balancer state")
        self.flow_table_size = flow_table_size
        self.lcores = []
        self._service_dtype, self._backend_dtype = _spec_dtypes()

    cdef rplb_lb *_get(self) except NULL:
        if self.lb == NULL:
            raise RplbError(9, "load balancer is closed")
        return self.lb

    def add_worker(self, unsigned int lcore_id):
        rc = rplb_lb_add_worker(self._get(), lcore_id)
        if rc < 0:
            raise RplbError(-rc, f"cannot create the flow table of lcore {lcore_id} "
                            f"({self.flow_table_size} flows; lower flow_table_size or raise -m)",
                            rte_strerror(-rc).decode())
        self.lcores.append(lcore_id)
        return rc

    def publish(self, services, backends, maglevs, timeouts, bint strict=False):
        """Build the next table generation and publish it to the workers.

        services, backends: spec arrays of the C structs' dtypes
        (rplb.contract.DTYPES), in any order; maglevs: one MaglevTable (or
        None: no backend of weight > 0) per service spec; timeouts: a
        Timeouts or {state name: seconds}.  Blocks (without the GIL) until
        every running worker has adopted the new tables.  Raises RplbError
        (EINVAL: bad specs, named in the message or in DPDK's log; nothing
        changed then)."""
        cdef rplb_lb *lb = self._get()
        cdef rplb_table_specs specs
        cdef cnp.ndarray service_array, backend_array
        cdef rplb_maglev **tables = NULL
        cdef MaglevTable table
        cdef Py_ssize_t i
        cdef int rc
        _check_spec_array("services", services, self._service_dtype)
        _check_spec_array("backends", backends, self._backend_dtype)
        service_array, backend_array = services, backends
        maglevs = list(maglevs)
        if len(maglevs) != service_array.shape[0]:
            raise RplbError(22, f"publish: {len(maglevs)} Maglev tables for "
                                f"{service_array.shape[0]} services (one per service)")
        memset(&specs, 0, sizeof(specs))
        for i, value in enumerate(_timeouts_tuple(timeouts)):
            specs.timeout_s[i] = value
        specs.services = <const rplb_service_spec *>service_array.data
        specs.n_services = service_array.shape[0]
        specs.backends = <const rplb_backend_spec *>backend_array.data
        specs.n_backends = backend_array.shape[0]
        specs.strict = strict
        tables = <rplb_maglev **>PyMem_Malloc(max(len(maglevs), 1) * sizeof(rplb_maglev *))
        if tables == NULL:
            raise MemoryError()
        try:
            for i in range(len(maglevs)):
                if maglevs[i] is None:
                    tables[i] = NULL
                elif isinstance(maglevs[i], MaglevTable):
                    table = maglevs[i]
                    tables[i] = table.table
                else:
                    raise RplbError(22, f"publish: maglevs[{i}] is a "
                                        f"{type(maglevs[i]).__name__}, not a MaglevTable")
            specs.maglevs = tables
            # The specs and the MaglevTable objects (held by maglevs) stay
            # alive until rplb_lb_publish returns.
            with nogil:
                rc = rplb_lb_publish(lb, &specs)
        finally:
            PyMem_Free(tables)
        check_rc(rc, "cannot publish load-balancing tables")

    def service_counters(self, worker=None, slots=None):
        """The service counters (the fields of rplb_service_counters, as
        int64), indexed by service id (RPLB_MAX_SERVICES entries, or only
        the ids in slots, in their order): one worker's, or summed over
        the workers."""
        return self._counters(True, worker, slots)

    def backend_counters(self, worker=None, slots=None):
        """The backend counters, indexed by backend slot (or only the given
        slots, in their order): one worker's, or summed over the workers."""
        return self._counters(False, worker, slots)

    def worker_count(self):
        return rplb_lb_worker_count(self._get())

    def worker_flows(self, unsigned int worker):
        """Flows stored in one worker's flow table now."""
        return rplb_lb_worker_flows(self._get(), worker)

    cdef _counters(self, bint services, worker, slots=None):
        from rplb import contract
        cdef rplb_lb *lb = self._get()
        cdef unsigned int w, n = RPLB_MAX_SERVICES if services else RPLB_MAX_BACKENDS
        cdef const char *base
        cdef Py_ssize_t nbytes
        name = "rplb_service_counters" if services else "rplb_backend_counters"
        dtype = contract.DTYPES[name]
        nbytes = n * <Py_ssize_t>dtype.itemsize
        workers = range(rplb_lb_worker_count(lb)) if worker is None else [worker]
        total = None
        for w in workers:
            if w >= rplb_lb_worker_count(lb):
                raise RplbError(22, f"no worker {w}")
            if services:
                base = <const char *>rplb_lb_service_counters(lb, w)
            else:
                base = <const char *>rplb_lb_backend_counters(lb, w)
            # A view of the worker's own array, only read here: the copy
            # (or the sum) is what leaves.
            view = np.frombuffer(<char[:nbytes]>base, dtype=dtype)
            part = view if slots is None else view[slots]
            if total is None:
                total = contract.summable(part)
            else:
                # Viewed as int64 like the total (summable): uint64 plus
                # int64 would be float64 in numpy.
                for field in dtype.names:
                    total[field] += part[field].astype(np.int64)
        if total is None:
            total = contract.summable(np.zeros(n if slots is None else len(slots), dtype=dtype))
        return total

    def flow_sample(self, unsigned int count=16, unsigned int timeout_ms=1000):
        """Up to count flows of each worker, copied by the worker between
        bursts: dicts with client, vip, backend (ip, port), proto, service_id,
        backend_id, state, idle_ms and lcore (the worker's).  Raises RplbError (ETIMEDOUT when a
        worker is not running)."""
        cdef rplb_lb *lb = self._get()
        cdef rplb_flow_sample buf[256]
        cdef int n
        cdef unsigned int w
        count = min(count, RPLB_FLOW_SAMPLE_MAX, 256)
        flows = []
        for w in range(rplb_lb_worker_count(lb)):
            with nogil:
                n = rplb_lb_flow_sample(lb, w, buf, count, timeout_ms)
            check_rc(n, f"flow sample of worker {w}")
            for i in range(n):
                s = &buf[i]
                if s.family == 6:
                    client = _ip6(s.client_ip6)
                    vip = _ip6(s.vip6)
                    backend = _ip6(s.backend_ip6)
                else:
                    client, vip, backend = _ip(s.client_ip), _ip(s.vip), _ip(s.backend_ip)
                flows.append({
                    "family": s.family,
                    "client": (client, _port(s.client_port)),
                    "vip": (vip, _port(s.vport)),
                    "backend": (backend, _port(s.backend_port)),
                    "proto": {6: "tcp", 17: "udp"}.get(s.proto, str(s.proto)),
                    "service_id": s.service_id, "backend_id": s.backend_id,
                    "state": FLOW_STATE_NAMES[s.state] if s.state < RPLB_FLOW_STATES else "?",
                    "idle_ms": s.idle_ms, "lcore": self.lcores[w]})
        return flows

    @property
    def bytes_per_flow(self):
        return rplb_lb_flow_memory(self._get())

    def close(self):
        if self.lb != NULL:
            rplb_lb_free(self.lb)
            self.lb = NULL


cdef extern from "<arpa/inet.h>" nogil:
    uint32_t htonl(uint32_t host_order)


cdef uint32_t _network_order_ip(uint32_t host_order):
    """The value whose memory holds host_order's bytes in network order."""
    return htonl(host_order)


def _ip(uint32_t network_order):
    """The dotted quad of an address stored as it was on the wire."""
    return ".".join(str((network_order >> shift) & 0xFF) for shift in (0, 8, 16, 24))


cdef str _ip6(const uint8_t *address):
    """The canonical text of a 16-byte IPv6 address (network order)."""
    import ipaddress
    return str(ipaddress.IPv6Address(bytes(address[:16])))


cdef uint32_t _steering_address(address):
    """The 32 bits the owner function takes, as they lie in memory: an IPv4
    address as on the wire; an IPv6 address folded (csrc/steer.h:
    rplb_steer_fold6, the XOR of its four words)."""
    import ipaddress
    parsed = ipaddress.ip_address(address)
    if parsed.version == 4:
        return _network_order_ip(int(parsed))
    packed = parsed.packed
    cdef uint32_t folded = 0
    for at in range(0, 16, 4):
        # Each word as the C side loads it from memory (little-endian).
        folded ^= int.from_bytes(packed[at:at + 4], "little")
    return folded


def _port(uint16_t network_order):
    return ((network_order & 0xFF) << 8) | (network_order >> 8)


def _timeouts_tuple(timeouts):
    """Seconds per flow state, in the order of enum rplb_flow_state: from a
    dict or an object (config.Timeouts) keyed by the states' names."""
    names = enum_names()["flow_states"]
    if isinstance(timeouts, dict):
        return tuple(int(timeouts[name]) for name in names)
    return tuple(int(getattr(timeouts, name)) for name in names)


# ---- several workers: steering and handoff ------------------------------------

MAX_WORKERS = RPLB_MAX_WORKERS


def handoff_ring_size(unsigned int n_workers):
    """Entries of each ring between n_workers workers (0 for one worker;
    no EAL needed)."""
    return rplb_handoff_ring_size(n_workers)


def steering_owner(address, unsigned int n_workers):
    """The index of the worker that owns a client address (a dotted quad or
    an int in host order) among n_workers, with software steering
    (csrc/steer.h; no EAL needed)."""
    import ipaddress
    # The C side takes the address as it lies on the wire (IPv6: folded).
    return rplb_steer_software_owner(_steering_address(address), n_workers)


cdef class Handoff:
    """The rings between several workers of the load balancer (one per
    ordered pair) and the steering that says which worker owns a frame.
    Close it after the workers that use it."""

    cdef rplb_handoff *handoff
    cdef readonly unsigned int n_workers
    cdef readonly str mode

    def __cinit__(self, unsigned int n_workers, int socket_id=-1):
        self.handoff = NULL
        if socket_id < 0:
            socket_id = rte_socket_id()
        self.handoff = rplb_handoff_create(n_workers, socket_id)
        if self.handoff == NULL:
            raise_rte_errno(f"cannot create the handoff rings of {n_workers} workers "
                            f"({n_workers * (n_workers - 1)} rings; raise -m?)")
        self.n_workers = n_workers
        self.mode = "software"

    cdef rplb_handoff *_get(self) except NULL:
        if self.handoff == NULL:
            raise RplbError(9, "the handoff is closed")
        return self.handoff

    def steer_in_hardware(self, bytes rss_key, unsigned int reta_size):
        """The ports spread frames by the client address (rte_flow RSS with
        rss_key over reta_size entries): steer only what they cannot."""
        check_rc(rplb_handoff_steer_in_hardware(self._get(), rss_key, len(rss_key), reta_size),
                 "hardware steering")
        self.mode = "hardware"

    def owner(self, address):
        """The index of the worker that owns a client address."""
        import ipaddress
        return rplb_handoff_owner(self._get(), _steering_address(address))

    def close(self):
        if self.handoff != NULL:
            rplb_handoff_free(self.handoff)
            self.handoff = NULL


# ---- workers ---------------------------------------------------------------

cdef class Worker:
    """The C poll-mode loop on one worker lcore, between two ports: it
    polls rx queue `queue` of each and sends on tx queue `queue`.  With a
    Handoff, it is worker handoff_index of several that steer frames to
    each other."""

    cdef rplb_worker *worker
    cdef readonly unsigned int lcore_id
    cdef readonly unsigned int queue
    cdef readonly str engine
    cdef readonly bint running
    cdef object _keep      # ports / load balancer / handoff the C side points into

    def __cinit__(self, unsigned int lcore_id, Port frontend, Port backend,
                  LoadBalancer lb=None, unsigned int drain_us=100, unsigned int queue=0,
                  Handoff handoff=None, unsigned int handoff_index=0, Port kernel=None,
                  unsigned int kernel_queue=0, local_address=None,
                  unsigned int kernel_rate=0, unsigned int kernel_burst=0):
        """queue: this worker's rx and tx queue on both ports; handoff, with
        handoff_index: the rings between several workers of the load
        balancer and this worker's place among them.  kernel: the port of
        the appliance's own kernel interface (the exception path,
        csrc/rplb.h), whose queue pair kernel_queue is this worker's;
        local_address its IPv4 address (an ipaddress.IPv4Address or text);
        kernel_rate, kernel_burst: what the worker hands the kernel at most
        (frames per second, at once)."""
        cdef rplb_worker_params params
        cdef const rplb_engine *engine
        cdef void *state = NULL
        self.worker = NULL
        self.running = False
        memset(&params, 0, sizeof(params))
        params.frontend_port = frontend.port_id
        params.backend_port = backend.port_id
        params.rx_queue = queue
        params.tx_queue = queue
        if handoff is not None:
            if lb is None:
                raise RplbError(22, "only the load balancer's workers steer frames")
            params.handoff = handoff._get()
            params.handoff_index = handoff_index
        params.tx_cksum_offload[0] = frontend.tx_cksum_offload
        params.tx_cksum_offload[1] = backend.tx_cksum_offload
        params.rx_cksum_offload[0] = frontend.rx_cksum_offload
        params.rx_cksum_offload[1] = backend.rx_cksum_offload
        params.drain_us = drain_us
        params.socket_id = rte_lcore_to_socket_id(lcore_id)
        if kernel is not None:
            import ipaddress
            if kernel_queue >= kernel.queues:
                raise RplbError(22, f"port {kernel.port_id} has no queue {kernel_queue}")
            params.local_addr = _network_order_ip(int(ipaddress.IPv4Address(local_address)))
            if params.local_addr == 0 or kernel_rate == 0 or kernel_burst == 0:
                raise RplbError(22, "the exception path needs an address, a rate and a burst")
            params.kernel_port = kernel.port_id
            params.kernel_queue = kernel_queue
            params.kernel_rate = kernel_rate
            params.kernel_burst = kernel_burst
        if lb is None:
            engine = rplb_engine_fwd()
        else:
            engine = rplb_engine_lb()
            state = lb._get()
            lb.add_worker(lcore_id)
        self.worker = rplb_worker_create(&params, engine, state)
        if self.worker == NULL:
            raise_rte_errno(f"cannot create the worker of lcore {lcore_id}")
        self.lcore_id = lcore_id
        self.queue = queue
        self.engine = rplb_engine_name(engine).decode()
        self._keep = (frontend, backend, lb, handoff, kernel)

    def launch(self):
        """Start the loop on its lcore (returns at once); again after stop()."""
        if self.worker == NULL:
            raise RplbError(9, "worker is closed")
        if self.running:
            raise RplbError(16, f"the worker on lcore {self.lcore_id} is running")
        rplb_worker_rearm(self.worker)
        rc = rte_eal_remote_launch(<lcore_function_t *>rplb_worker_main, self.worker,
                                   self.lcore_id)
        check_rc(rc, f"cannot launch the worker on lcore {self.lcore_id}")
        self.running = True

    def request_stop(self):
        """Ask the loop to stop, without waiting (stop() waits): several
        workers asked at once stop together."""
        if self.running:
            rplb_worker_request_stop(self.worker)

    def stop(self):
        """Ask the loop to stop and wait for it (without the GIL); returns its status."""
        cdef int rc = 0
        if self.running:
            rplb_worker_request_stop(self.worker)
            with nogil:
                rc = rte_eal_wait_lcore(self.lcore_id)
            self.running = False
            if rc != 0:
                raise RplbError(-rc, f"worker on lcore {self.lcore_id} failed")
        return rc

    def discard_handed_over(self):
        """Once every worker of its handoff stopped: free the frames handed
        to this one that it never took (counted as drops, handoff_at_stop).
        Returns how many."""
        if self.worker == NULL or self.running:
            raise RplbError(16, f"the worker on lcore {self.lcore_id} is running or closed")
        return rplb_worker_discard_handed_over(self.worker)

    def counters(self):
        """{'port': [{rx_packets..}, {..}] by side, 'drops': {reason: n},
        'events': {event: n}}: the names from the C side's layout and enums."""
        from rplb import contract
        if self.worker == NULL:
            raise RplbError(9, "worker is closed")
        cdef const rplb_lcore_counters *c = rplb_worker_counters(self.worker)
        dtype = contract.DTYPES["rplb_lcore_counters"]
        cdef Py_ssize_t nbytes = dtype.itemsize
        record = np.frombuffer(<char[:nbytes]><const char *>c, dtype=dtype).copy()[0]
        return contract.lcore_counters_dict(record)

    def close(self):
        if self.worker != NULL:
            self.stop()
            rplb_worker_free(self.worker)
            self.worker = NULL


# ---- DPDK telemetry (/rplb/stats, /rplb/services) ------------------------------

TELEMETRY_STATS = RPLB_TEL_STATS
TELEMETRY_SERVICES = RPLB_TEL_SERVICES


def telemetry_register():
    """Register rplb's telemetry commands (after eal_init; idempotent)."""
    check_rc(rplb_telemetry_register(), "rte_telemetry_register_cmd")


cdef void _tel_copy(char *dst, str text):
    cdef bytes raw = text.encode()[:RPLB_TEL_NAME_LEN - 1]
    cdef Py_ssize_t i
    for i in range(len(raw)):
        dst[i] = raw[i]
    dst[len(raw)] = 0


def telemetry_publish(unsigned int command, entries):
    """Replace what a telemetry command answers: entries is a sequence of
    (group, name, value), value an int >= 0 or a str; group "" for the
    top-level dict (see csrc/telemetry.h)."""
    entries = list(entries)
    cdef unsigned int n = len(entries)
    cdef rplb_tel_entry *c = <rplb_tel_entry *>PyMem_Malloc(max(n, 1) * sizeof(rplb_tel_entry))
    if c == NULL:
        raise MemoryError()
    memset(c, 0, max(n, 1) * sizeof(rplb_tel_entry))
    cdef unsigned int i
    try:
        for i in range(n):
            group, name, value = entries[i]
            _tel_copy(c[i].group, group)
            _tel_copy(c[i].name, name)
            if isinstance(value, str):
                c[i].is_str = 1
                _tel_copy(c[i].str, value)
            else:
                c[i].value = max(int(value), 0)
        check_rc(rplb_telemetry_publish(command, c, n), "rplb_telemetry_publish")
    finally:
        PyMem_Free(c)


# ---- DPDK's log stream ---------------------------------------------------------

cdef extern from *:
    """
    #include <stdio.h>
    #include <string.h>
    #include <unistd.h>
    #include <rte_log.h>

    /* DPDK's log stream, redirected into a pipe whose write end is
     * non-blocking (rplb/console.py reads the other end): a message that
     * does not fit, because nobody drains rplb-dpdk's stderr, is dropped
     * and counted instead of blocking the thread that logs (EAL's threads,
     * the control plane).  Each message goes out in one write() (at most
     * PIPE_BUF bytes, so never interleaved with another), with its syslog
     * priority in front ("<3>...") and a newline at its end. */
    static int rplb_log_fd = -1;
    static uint64_t rplb_log_dropped_count;

    static ssize_t
    rplb_log_write(void *cookie, const char *buf, size_t size)
    {
        char message[PIPE_BUF];
        int level = rte_log_cur_msg_loglevel();
        size_t head, body;

        (void)cookie;
        head = (size_t)snprintf(message, sizeof(message), "<%d>",
                                level >= 1 && level <= 8 ? level - 1 : 6);
        body = size < sizeof(message) - head - 1 ? size : sizeof(message) - head - 1;
        memcpy(message + head, buf, body);
        if (body == 0 || message[head + body - 1] != '\\n')
            message[head + body++] = '\\n';
        if (write(rplb_log_fd, message, head + body) < 0)
            __atomic_add_fetch(&rplb_log_dropped_count, 1, __ATOMIC_RELAXED);
        return (ssize_t)size;
    }

    static FILE *
    rplb_log_stream_open(int fd)
    {
        cookie_io_functions_t functions;

        memset(&functions, 0, sizeof(functions));
        functions.write = rplb_log_write;
        rplb_log_fd = fd;
        return fopencookie(NULL, "w", functions);
    }

    static uint64_t
    rplb_log_dropped(void)
    {
        return __atomic_load_n(&rplb_log_dropped_count, __ATOMIC_RELAXED);
    }
    """
    FILE *rplb_log_stream_open(int fd)
    uint64_t rplb_log_dropped()


def log_to_fd(int fd):
    """Send DPDK's log messages to fd, the non-blocking write end of a pipe
    (see rplb/console.py), instead of stderr and syslog: one write per
    message, b"<priority>text\\n"; what does not fit is dropped and counted
    (log_dropped).  Call before eal_init, so that EAL's own start-up
    messages take the same way.  Raises OSError."""
    cdef FILE *stream = rplb_log_stream_open(fd)
    if stream == NULL:
        raise OSError("cannot open a stream for DPDK's log")
    rte_openlog_stream(stream)


def log_dropped():
    """DPDK log messages dropped because the pipe was full."""
    return rplb_log_dropped()
