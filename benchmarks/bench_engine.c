/* SPDX-License-Identifier: BSD-3-Clause
 *
 * bench_engine.c: the cost of an engine alone, without ports' rx.
 *
 *   rplb-bench-engine [EAL options --]
 *                     [--mode established|new|replies|fwd|passthrough|memory|steered|handoff|
 *                             established6]
 *                     [--flows F] [--backends B] [--bursts N] [--flow-table T]
 *
 * Initialises EAL (default: --no-huge -m 1024 --no-pci -l 0 and two
 * net_null ports, so the worker's buffered tx works and frees mbufs), builds
 * the load balancer through the C API of rplb.h (one TCP service,
 * 10.0.0.100:80, B backends, a round-robin Maglev table), and calls the
 * engine's process_burst + housekeeping directly, burst after burst, on
 * 64-byte TCP frames:
 *
 *   established  F flows (ACKs), all already in the flow table (one untimed
 *                pass first);
 *   new          every frame the SYN of a never-seen client 5-tuple (the
 *                flow table is emptied, untimed, whenever it is half full);
 *   replies      the backends' replies (ACKs) of F established flows, from
 *                the backend port: the backend side's cost (its classify
 *                compares every frame with the appliance's own address);
 *   fwd          the pass-through engine: what the worker's tx and the
 *                mbuf frees cost by themselves;
 *   passthrough  the lb engine on F TCP flows to an address that is no VIP
 *                (forwarded unchanged, after a flow-table miss and a
 *                service lookup);
 *   memory       no packets: the bytes the flow table of --flow-table flows
 *                takes from the DPDK heap, per flow, next to the model of
 *                rplb_lb_flow_memory();
 *   steered      established, as worker 0 of two (software steering): each
 *                burst goes through the steering pass first, and every
 *                frame is its own (a client of worker 0): what steering
 *                costs a worker whose frames all arrive at it;
 *   handoff      established, every frame received by worker 1 and handed
 *                to worker 0, its owner, which takes and processes it: the
 *                instructions of the handoff (both workers run on this one
 *                thread: no cross-core cache traffic is counted or timed).
 *
 * Timing: the timed bursts are split into 64 chunks; ns_per_packet is the
 * median chunk (robust to other processes on a shared machine),
 * ns_per_packet_min the fastest, ns_per_packet_mean the plain average.
 *
 * Per burst, untimed: allocate 32 mbufs and copy the frames in (like an rx
 * burst leaves them: in cache).  Timed: process_burst (classify, lookup,
 * Maglev, rewrite, buffered tx to net_null which frees the mbufs) and one
 * housekeeping call (RCU quiescent state, incremental aging), exactly what
 * rplb_worker_main does per received burst.
 *
 * The timed part is the function measured_burst() (measured_burst_steered,
 * measured_burst_handoff in those modes), so
 *   valgrind --tool=callgrind --toggle-collect='measured_burst*' rplb-bench-engine ...
 * counts the instructions of exactly that part.  Prints one JSON object.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <sys/stat.h>

#include "lb.h"
#include "worker.h"

#define FRAME_LEN 64
#define VIP RTE_IPV4(10, 0, 0, 100)
#define VIP_PORT 80
#define CLIENT_NET RTE_IPV4(198, 18, 0, 0)
#define NOT_A_VIP RTE_IPV4(10, 0, 0, 200)

enum mode {
	MODE_ESTABLISHED, MODE_NEW, MODE_REPLIES, MODE_FWD, MODE_PASSTHROUGH, MODE_MEMORY,
	MODE_STEERED, MODE_HANDOFF, MODE_ESTABLISHED6,
};

static const char *const mode_names[] = {
	[MODE_ESTABLISHED] = "established", [MODE_NEW] = "new", [MODE_REPLIES] = "replies",
	[MODE_FWD] = "fwd", [MODE_PASSTHROUGH] = "passthrough", [MODE_MEMORY] = "memory",
	[MODE_STEERED] = "steered", [MODE_HANDOFF] = "handoff",
	[MODE_ESTABLISHED6] = "established6",
};

/* --mode established6: the established case over IPv6 (lb_ipv6.c), frames
 * of FRAME6_LEN bytes (the same 10 bytes of TCP payload). */
#define FRAME6_LEN (14 + 40 + 20 + 10)
static int ipv6_mode;
static unsigned int frame_len = FRAME_LEN;

/* The IPv6 VIP fd00::100 and backend i's address fd00:1::i+1. */
static void
vip6_of(uint8_t addr[16])
{
	memset(addr, 0, 16);
	addr[0] = 0xfd;
	addr[14] = 0x01;
}

static void
backend6_of(uint32_t i, uint8_t addr[16])
{
	memset(addr, 0, 16);
	addr[0] = 0xfd;
	addr[3] = 0x01;
	addr[12] = (uint8_t)((i + 1) >> 24);
	addr[13] = (uint8_t)((i + 1) >> 16);
	addr[14] = (uint8_t)((i + 1) >> 8);
	addr[15] = (uint8_t)(i + 1);
}

/* The steered and handoff modes: two workers, worker 0 the owner of every
 * flow (their clients are chosen so). */
#define WORKERS 2

static int
two_workers(enum mode mode)
{
	return mode == MODE_STEERED || mode == MODE_HANDOFF;
}

struct options {
	enum mode mode;
	uint32_t flows;
	uint32_t backends;
	uint64_t bursts;
	uint32_t flow_table;
	uint32_t mbufs;
};

static void
die(const char *what, int err)
{
	fprintf(stderr, "rplb-bench-engine: %s: %s\n", what, rte_strerror(err));
	exit(1);
}

static uint16_t
cksum16(const void *data, size_t len, uint32_t sum)
{
	const uint8_t *p = data;
	size_t i;

	for (i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* The TCP header of both families' frames, its checksum apart. */
static void
fill_tcp(struct rte_tcp_hdr *tcp, uint16_t src_port, uint16_t dst_port, uint8_t tcp_flags)
{
	tcp->src_port = rte_cpu_to_be_16(src_port);
	tcp->dst_port = rte_cpu_to_be_16(dst_port);
	tcp->sent_seq = rte_cpu_to_be_32(4096);
	tcp->data_off = 5 << 4;
	tcp->tcp_flags = tcp_flags;
	tcp->rx_win = 0xffff;
}

/* A valid 64-byte Ethernet/IPv4/TCP frame (10 bytes of payload). */
static void
make_frame_to(uint8_t *frame, uint32_t src_ip, uint16_t src_port, uint32_t dst_ip,
	      uint16_t dst_port, uint8_t tcp_flags)
{
	struct rte_ether_hdr *eth = (struct rte_ether_hdr *)frame;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eth + 1);
	struct rte_tcp_hdr *tcp = (struct rte_tcp_hdr *)(ip + 1);
	uint8_t pseudo[12];
	uint32_t sum = 0;
	size_t i;

	memset(frame, 0, FRAME_LEN);
	eth->dst_addr = (struct rte_ether_addr){{0x02, 0, 0, 0, 0, 0x01}};
	eth->src_addr = (struct rte_ether_addr){{0x02, 0, 0, 0, 0, 0xc1}};
	eth->ether_type = RTE_BE16(RTE_ETHER_TYPE_IPV4);
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->total_length = rte_cpu_to_be_16(FRAME_LEN - sizeof(*eth));
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_TCP;
	ip->src_addr = rte_cpu_to_be_32(src_ip);
	ip->dst_addr = rte_cpu_to_be_32(dst_ip);
	ip->hdr_checksum = rte_cpu_to_be_16(cksum16(ip, sizeof(*ip), 0));
	fill_tcp(tcp, src_port, dst_port, tcp_flags);
	memcpy(pseudo, &ip->src_addr, 8);
	pseudo[8] = 0;
	pseudo[9] = IPPROTO_TCP;
	pseudo[10] = 0;
	pseudo[11] = FRAME_LEN - sizeof(*eth) - sizeof(*ip);
	for (i = 0; i < sizeof(pseudo); i += 2)
		sum += (uint32_t)pseudo[i] << 8 | pseudo[i + 1];
	tcp->cksum = rte_cpu_to_be_16(cksum16(tcp, pseudo[11], sum));
}

/* A valid Ethernet/IPv6/TCP frame of FRAME6_LEN bytes from client
 * 2001:db8::<src_ip> to the IPv6 VIP. */
static void
make_frame6(uint8_t *frame, uint32_t src_ip, uint16_t src_port, uint8_t tcp_flags)
{
	struct rte_ether_hdr *eth = (struct rte_ether_hdr *)frame;
	struct rte_ipv6_hdr *ip = (struct rte_ipv6_hdr *)(eth + 1);
	struct rte_tcp_hdr *tcp = (struct rte_tcp_hdr *)(ip + 1);
	uint16_t l4_len = FRAME6_LEN - sizeof(*eth) - sizeof(*ip);
	uint32_t sum = 0;
	size_t i;

	memset(frame, 0, FRAME6_LEN);
	eth->dst_addr = (struct rte_ether_addr){{0x02, 0, 0, 0, 0, 0x01}};
	eth->src_addr = (struct rte_ether_addr){{0x02, 0, 0, 0, 0, 0xc1}};
	eth->ether_type = RTE_BE16(RTE_ETHER_TYPE_IPV6);
	ip->vtc_flow = RTE_BE32(0x60000000);
	ip->payload_len = rte_cpu_to_be_16(l4_len);
	ip->proto = IPPROTO_TCP;
	ip->hop_limits = 64;
	ip->src_addr[0] = 0x20;
	ip->src_addr[1] = 0x01;
	ip->src_addr[2] = 0x0d;
	ip->src_addr[3] = 0xb8;
	ip->src_addr[12] = (uint8_t)(src_ip >> 24);
	ip->src_addr[13] = (uint8_t)(src_ip >> 16);
	ip->src_addr[14] = (uint8_t)(src_ip >> 8);
	ip->src_addr[15] = (uint8_t)src_ip;
	vip6_of(ip->dst_addr);
	fill_tcp(tcp, src_port, VIP_PORT, tcp_flags);
	/* The pseudo-header: both addresses (adjacent), length, protocol. */
	for (i = 0; i < 32; i += 2) {
		const uint8_t *addrs = (const uint8_t *)ip + offsetof(struct rte_ipv6_hdr, src_addr);

		sum += (uint32_t)addrs[i] << 8 | addrs[i + 1];
	}
	sum += l4_len + IPPROTO_TCP;
	tcp->cksum = rte_cpu_to_be_16(cksum16(tcp, l4_len, sum));
}

/* A client's frame to the VIP. */
static void
make_frame(uint8_t *frame, uint32_t src_ip, uint16_t src_port, uint32_t dst_ip,
	   uint8_t tcp_flags)
{
	if (ipv6_mode)
		make_frame6(frame, src_ip, src_port, tcp_flags);
	else
		make_frame_to(frame, src_ip, src_port, dst_ip, VIP_PORT, tcp_flags);
}

/* The reply of the backend the engine chose for a client's flow to the VIP
 * (its Maglev pick, computed as the engine does). */
static void
make_reply_frame(uint8_t *frame, const struct rplb_lb *lb, uint32_t client_ip,
		 uint16_t client_port)
{
	const struct rplb_lb_tables *tables = lb->tables;
	struct rplb_flow_key key = {
		.src_ip = rte_cpu_to_be_32(client_ip), .dst_ip = rte_cpu_to_be_32(VIP),
		.src_port = rte_cpu_to_be_16(client_port), .dst_port = rte_cpu_to_be_16(VIP_PORT),
		.proto = IPPROTO_TCP, .direction = RPLB_DIR_CLIENT,
	};
	const struct rplb_lb_backend *backend =
		&tables->backends[rplb_maglev_pick(&tables->services[0], rplb_flow_key_hash(&key))];

	make_frame_to(frame, rte_be_to_cpu_32(backend->ip), rte_be_to_cpu_16(backend->port),
		      client_ip, client_port, RTE_TCP_ACK_FLAG);
}

/* Client n: a unique (ip, port) for n < 2^16 * 60000. */
static void
client_of(uint64_t n, uint32_t *ip, uint16_t *port)
{
	*ip = CLIENT_NET + (uint32_t)(n % 65536);
	*port = (uint16_t)(1024 + (n / 65536) % 60000);
}

static void
setup_port(uint16_t port, struct rte_mempool *pool, uint16_t queues)
{
	struct rte_eth_conf conf;
	uint16_t queue;
	int rc;

	memset(&conf, 0, sizeof(conf));
	rc = rte_eth_dev_configure(port, queues, queues, &conf);
	for (queue = 0; rc == 0 && queue < queues; queue++) {
		rc = rte_eth_rx_queue_setup(port, queue, 512, rte_socket_id(), NULL, pool);
		if (rc == 0)
			rc = rte_eth_tx_queue_setup(port, queue, 512, rte_socket_id(), NULL);
	}
	if (rc == 0)
		rc = rte_eth_dev_start(port);
	if (rc != 0)
		die("port setup", -rc);
}

static struct rplb_lb *
setup_lb(const struct options *o, unsigned int workers)
{
	struct rplb_lb_params params = {
		.flow_table_size = o->flow_table, .max_workers = workers,
		.timeout_s = {60, 10, 300, 10}, .socket_id = (int)rte_socket_id(),
	};
	struct rplb_service_spec service = {
		.vip = rte_cpu_to_be_32(VIP), .port = rte_cpu_to_be_16(VIP_PORT),
		.proto = IPPROTO_TCP, .family = 4, .service_id = 0,
	};
	struct rplb_table_specs specs = {
		.services = &service, .n_services = 1, .timeout_s = {60, 10, 300, 10},
	};
	struct rplb_backend_spec *backends;
	struct rplb_maglev *maglev;
	const uint32_t maglev_size = 65537;
	uint32_t *backend_ids;
	struct rplb_lb *lb;
	int32_t *owners;
	uint32_t i;
	int rc;

	lb = rplb_lb_create(&params);
	if (lb == NULL)
		die("rplb_lb_create", rte_errno);
	/* The workers' lcore ids: this lcore's, then the next ones (the
	 * steered and handoff modes run both workers on this thread). */
	for (i = 0; i < workers; i++) {
		rc = rplb_lb_add_worker(lb, rte_lcore_id() + i);
		if (rc < 0)
			die("rplb_lb_add_worker", -rc);
	}
	backends = calloc(o->backends, sizeof(*backends));
	backend_ids = calloc(o->backends, sizeof(*backend_ids));
	owners = malloc(maglev_size * sizeof(*owners));
	if (backends == NULL || backend_ids == NULL || owners == NULL)
		die("malloc", ENOMEM);
	if (ipv6_mode) {
		service.vip = 0;
		service.family = 6;
		vip6_of(service.vip6);
	}
	for (i = 0; i < o->backends; i++) {
		backend_ids[i] = rplb_backend_id(i, 0);
		backends[i] = (struct rplb_backend_spec){
			.ip = rte_cpu_to_be_32(RTE_IPV4(192, 168, 1 + i / 250, 1 + i % 250)),
			.port = rte_cpu_to_be_16(8080), .weight = 1, .backend_id = backend_ids[i],
			.service_id = 0,
		};
		if (ipv6_mode) {
			backends[i].ip = 0;
			backend6_of(i, backends[i].ip6);
		}
	}
	/* Not Maglev's permutations: the engine only reads slot -> backend. */
	for (i = 0; i < maglev_size; i++)
		owners[i] = (int32_t)(i % o->backends);
	maglev = rplb_maglev_create(owners, maglev_size, backend_ids, o->backends,
				    (int)rte_socket_id());
	if (maglev == NULL)
		die("rplb_maglev_create", rte_errno);
	specs.backends = backends;
	specs.n_backends = o->backends;
	specs.maglevs = &maglev;
	rc = rplb_lb_publish(lb, &specs);
	if (rc < 0)
		die("rplb_lb_publish", -rc);
	rplb_maglev_release(maglev);     /* the published tables hold it */
	free(backends);
	free(backend_ids);
	free(owners);
	return lb;
}

static size_t
heap_allocated(void)
{
	struct rte_malloc_socket_stats st;

	if (rte_malloc_get_socket_stats((int)rte_socket_id(), &st) != 0)
		return 0;
	return st.heap_allocsz_bytes;
}

/* What one stored flow costs in memory: the DPDK heap the flow table of
 * o->flow_table flows takes (record array, free stack and cuckoo buckets,
 * from the DPDK heap or, without hugepages, anonymous memory), per flow. */
static int
report_memory(const struct options *o)
{
	struct rplb_lb_params params = {
		.flow_table_size = o->flow_table, .max_workers = 1,
		.timeout_s = {60, 10, 300, 10}, .socket_id = (int)rte_socket_id(),
	};
	struct rplb_lb *lb = rplb_lb_create(&params);
	size_t before, after, counters;
	int rc;

	if (lb == NULL)
		die("rplb_lb_create", rte_errno);
	before = heap_allocated();
	rc = rplb_lb_add_worker(lb, rte_lcore_id());
	if (rc < 0)
		die("rplb_lb_add_worker (raise -m?)", -rc);
	after = heap_allocated();
	/* Without hugepages the table's arrays are anonymous memory, not heap. */
	if (lb->workers[0].flows->from_mmap)
		after += rplb_flow_table_bytes(lb->workers[0].flows);
	counters = RPLB_MAX_SERVICES * sizeof(struct rplb_service_counters) +
		   RPLB_MAX_BACKENDS * sizeof(struct rplb_backend_counters);
	printf("{\"mode\": \"memory\", \"flow_table_size\": %u, \"heap_bytes\": %zu, "
	       "\"bytes_per_flow_allocated\": %.1f, \"bytes_per_flow_model\": %zu, "
	       "\"flow_record_bytes\": %zu, \"flow_key_bytes\": %zu}\n",
	       o->flow_table, after - before - counters,
	       (double)(after - before - counters) / o->flow_table, rplb_lb_flow_memory(lb),
	       sizeof(struct rplb_flow), sizeof(struct rplb_flow_key));
	fflush(stdout);
	rplb_lb_free(lb);
	return 0;
}

/* Empty the flow table (untimed): keeps the "new" case from filling it. */
static void
reset_flows(struct rplb_lb *lb)
{
	rplb_flow_table_reset(lb->workers[0].flows);
}

/* The steered mode's burst: what a worker of several does with one
 * received burst of its own clients' frames. */
static void
steered_burst(struct rplb_worker *worker, struct rte_mbuf **pkts, uint16_t n)
{
	uint16_t kept = rplb_worker_steer_burst(worker, RPLB_FRONTEND, pkts, n);

	if (kept > 0)
		worker->engine->process_burst(worker, RPLB_FRONTEND, pkts, kept);
	worker->engine->housekeeping(worker, rte_rdtsc(), 0);
}

/* The handoff mode's burst: received by the worker that does not own it
 * (its steering pass hands it all over), then taken and processed by its
 * owner. */
static void
handoff_burst(struct rplb_worker *receiver, struct rplb_worker *owner, struct rte_mbuf **pkts,
	      uint16_t n)
{
	if (rplb_worker_steer_burst(receiver, RPLB_FRONTEND, pkts, n) != 0)
		die("handoff mode: a frame stayed with its receiver", EINVAL);
	rplb_worker_take_handed_over(owner);
	receiver->engine->housekeeping(receiver, rte_rdtsc(), 0);
	owner->engine->housekeeping(owner, rte_rdtsc(), 0);
}

/* Their timed parts (callgrind collects inside measured_burst*). */
__attribute__((noinline)) void measured_burst_steered(struct rplb_worker *worker,
						      struct rte_mbuf **pkts, uint16_t n);
__attribute__((noinline)) void
	      measured_burst_steered(struct rplb_worker *worker, struct rte_mbuf **pkts, uint16_t n)
{
	steered_burst(worker, pkts, n);
}

__attribute__((noinline)) void measured_burst_handoff(struct rplb_worker *receiver,
						      struct rplb_worker *owner,
						      struct rte_mbuf **pkts, uint16_t n);
__attribute__((noinline)) void
	      measured_burst_handoff(struct rplb_worker *receiver, struct rplb_worker *owner,
				     struct rte_mbuf **pkts, uint16_t n)
{
	handoff_burst(receiver, owner, pkts, n);
}

/* The timed part: what rplb_worker_main does with one received burst. */
__attribute__((noinline)) void measured_burst(struct rplb_worker *worker, struct rte_mbuf **pkts,
	      uint16_t n);
__attribute__((noinline)) void
	      measured_burst(struct rplb_worker *worker, struct rte_mbuf **pkts, uint16_t n)
{
	const struct rplb_engine *engine = worker->engine;

	engine->process_burst(worker, RPLB_FRONTEND, pkts, n);
	if (engine->housekeeping != NULL)
		engine->housekeeping(worker, rte_rdtsc(), 0);
}

/* The same for a burst from the backend port (--mode replies); callgrind's
 * --toggle-collect=measured_reply_burst counts it. */
__attribute__((noinline)) void measured_reply_burst(struct rplb_worker *worker,
						    struct rte_mbuf **pkts, uint16_t n);
__attribute__((noinline)) void
measured_reply_burst(struct rplb_worker *worker, struct rte_mbuf **pkts, uint16_t n)
{
	const struct rplb_engine *engine = worker->engine;

	engine->process_burst(worker, RPLB_BACKEND, pkts, n);
	if (engine->housekeeping != NULL)
		engine->housekeeping(worker, rte_rdtsc(), 0);
}

/* Untimed: an rx burst's worth of frames in fresh mbufs. */
static void
prepare_burst(struct rte_mempool *pool, struct rte_mbuf **pkts, const uint8_t *frames,
	      uint32_t n_frames, uint64_t *next, uint16_t n, int fresh_clients)
{
	uint16_t i;

	if (rte_pktmbuf_alloc_bulk(pool, pkts, n) != 0)
		die("rte_pktmbuf_alloc_bulk", ENOBUFS);
	for (i = 0; i < n; i++) {
		uint8_t *data = rte_pktmbuf_mtod(pkts[i], uint8_t *);

		if (fresh_clients) {
			uint32_t ip;
			uint16_t port;

			client_of(*next, &ip, &port);
			make_frame(data, ip, port, VIP, RTE_TCP_SYN_FLAG);
		} else {
			memcpy(data, frames + (size_t)(*next % n_frames) * frame_len, frame_len);
		}
		(*next)++;
		pkts[i]->data_len = (uint16_t)frame_len;
		pkts[i]->pkt_len = frame_len;
		pkts[i]->port = 0;
	}
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static int
remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	RTE_SET_USED(st);
	RTE_SET_USED(type);
	RTE_SET_USED(ftw);
	remove(path);
	return 0;
}

static void
usage(void)
{
	fprintf(stderr,
		"usage: rplb-bench-engine [EAL options --]\n"
		"       [--mode established|new|replies|fwd|passthrough|memory|steered|handoff|"
		"established6]\n"
		"       [--flows F] [--backends B] [--bursts N] [--flow-table T]\n");
	exit(2);
}

static void
parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{"mode", required_argument, NULL, 'm'},
		{"flows", required_argument, NULL, 'f'},
		{"backends", required_argument, NULL, 'b'},
		{"bursts", required_argument, NULL, 'n'},
		{"flow-table", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	*o = (struct options){
		.mode = MODE_ESTABLISHED, .flows = 1000, .backends = 16, .bursts = 200000,
		.flow_table = 0, .mbufs = 8191,
	};
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			if (strcmp(optarg, "established") == 0)
				o->mode = MODE_ESTABLISHED;
			else if (strcmp(optarg, "new") == 0)
				o->mode = MODE_NEW;
			else if (strcmp(optarg, "replies") == 0)
				o->mode = MODE_REPLIES;
			else if (strcmp(optarg, "fwd") == 0)
				o->mode = MODE_FWD;
			else if (strcmp(optarg, "passthrough") == 0)
				o->mode = MODE_PASSTHROUGH;
			else if (strcmp(optarg, "memory") == 0)
				o->mode = MODE_MEMORY;
			else if (strcmp(optarg, "steered") == 0)
				o->mode = MODE_STEERED;
			else if (strcmp(optarg, "handoff") == 0)
				o->mode = MODE_HANDOFF;
			else if (strcmp(optarg, "established6") == 0)
				o->mode = MODE_ESTABLISHED6;
			else
				usage();
			break;
		case 'f':
			o->flows = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 'b':
			o->backends = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 'n':
			o->bursts = strtoull(optarg, NULL, 0);
			break;
		case 't':
			o->flow_table = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		default:
			usage();
		}
	}
	if (o->flows == 0 || o->backends == 0 || o->backends > 1000 || o->bursts == 0)
		usage();
	/* rplb's default flow_table_size: the table the end-to-end runs use. */
	if (o->flow_table == 0)
		o->flow_table = RTE_MAX(1u << 20, 2 * o->flows);
}

int
main(int argc, char **argv)
{
	static char *default_eal[] = {
		"rplb-bench-engine", "--no-huge", "-m", "1024", "--no-pci", "-l", "0",
		"--log-level=*:warning", "--vdev", "net_null0,no-rx=1", "--vdev",
		"net_null1,no-rx=1", "--file-prefix", NULL, NULL,
	};
	char prefix[64];
	char **eal_argv, **opt_argv;
	int eal_argc, opt_argc, i, rc;
	struct options o;
	struct rte_mempool *pool;
	struct rplb_lb *lb = NULL;
	struct rplb_handoff *handoff = NULL;
	struct rplb_worker *worker, *other = NULL;
	struct rplb_worker_params wp;
	struct rte_mbuf *pkts[RPLB_BURST];
	uint8_t *frames;
	uint32_t n_frames;
	uint64_t next = 0, b, cycles = 0, timed_packets = 0, warm_bursts, resets = 0;
	const struct rplb_lcore_counters *counters;
	char runtime_dir[PATH_MAX];

	/* [EAL options --] options */
	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		;
	if (i < argc) {
		eal_argv = argv;
		eal_argc = i;
		argv[i] = argv[0];
		opt_argv = &argv[i];
		opt_argc = argc - i;
	} else {
		snprintf(prefix, sizeof(prefix), "rplb-bench-engine-%d", (int)getpid());
		default_eal[RTE_DIM(default_eal) - 2] = prefix;
		eal_argv = default_eal;
		eal_argc = RTE_DIM(default_eal) - 1;
		opt_argv = argv;
		opt_argc = argc;
	}
	parse_options(opt_argc, opt_argv, &o);

	rc = rte_eal_init(eal_argc, eal_argv);
	if (rc < 0)
		die("rte_eal_init", rte_errno != 0 ? rte_errno : EINVAL);
	if (rte_eth_dev_count_avail() < 2) {
		fprintf(stderr, "rplb-bench-engine: needs two ports (e.g. two net_null vdevs)\n");
		return 1;
	}
	if (o.mode == MODE_ESTABLISHED6) {
		ipv6_mode = 1;
		frame_len = FRAME6_LEN;
	}
	if (o.mode == MODE_MEMORY) {
		report_memory(&o);
		goto out;
	}
	pool = rte_pktmbuf_pool_create("bench_mbufs", o.mbufs, 256, 0,
				       RTE_MBUF_DEFAULT_BUF_SIZE, (int)rte_socket_id());
	if (pool == NULL)
		die("rte_pktmbuf_pool_create", rte_errno);
	setup_port(0, pool, two_workers(o.mode) ? WORKERS : 1);
	setup_port(1, pool, two_workers(o.mode) ? WORKERS : 1);

	memset(&wp, 0, sizeof(wp));
	wp.frontend_port = 0;
	wp.backend_port = 1;
	wp.drain_us = 100;
	wp.socket_id = (int)rte_socket_id();
	if (o.mode == MODE_FWD) {
		worker = rplb_worker_create(&wp, rplb_engine_fwd(), NULL);
	} else if (two_workers(o.mode)) {
		lb = setup_lb(&o, WORKERS);
		handoff = rplb_handoff_create(WORKERS, (int)rte_socket_id());
		if (handoff == NULL)
			die("rplb_handoff_create", rte_errno);
		wp.handoff = handoff;
		worker = rplb_worker_create(&wp, rplb_engine_lb(), lb);
		wp.handoff_index = 1;
		wp.rx_queue = wp.tx_queue = 1;
		other = rplb_worker_create(&wp, rplb_engine_lb(), lb);
		if (other == NULL)
			die("rplb_worker_create", rte_errno);
		other->lcore_id = rte_lcore_id() + 1;
		if ((rc = other->engine->start(other)) != 0)
			die("engine start", -rc);
	} else {
		lb = setup_lb(&o, 1);
		worker = rplb_worker_create(&wp, rplb_engine_lb(), lb);
	}
	if (worker == NULL)
		die("rplb_worker_create", rte_errno);
	worker->lcore_id = rte_lcore_id();
	if (worker->engine->start != NULL && (rc = worker->engine->start(worker)) != 0)
		die("engine start", -rc);

	/* The established flows' frames, in client order. */
	n_frames = o.mode == MODE_NEW ? 1 : o.flows;
	frames = malloc((size_t)n_frames * frame_len);
	if (frames == NULL)
		die("malloc", ENOMEM);
	for (i = 0, next = 0; i < (int)n_frames; next++) {
		uint32_t ip;
		uint16_t port;

		client_of(next, &ip, &port);
		/* Two workers: only the clients worker 0 owns. */
		if (two_workers(o.mode) &&
		    rplb_handoff_owner(handoff, rte_cpu_to_be_32(ip)) != 0)
			continue;
		make_frame(frames + (size_t)i * frame_len, ip, port,
			   o.mode == MODE_PASSTHROUGH ? NOT_A_VIP : VIP, RTE_TCP_ACK_FLAG);
		i++;
	}
	next = 0;

	/* Warm-up (untimed): one pass creates every flow; the caches settle. */
	warm_bursts = (n_frames + RPLB_BURST - 1) / RPLB_BURST + 1000;
	for (b = 0; b < warm_bursts; b++) {
		prepare_burst(pool, pkts, frames, n_frames, &next, RPLB_BURST, o.mode == MODE_NEW);
		if (o.mode == MODE_HANDOFF) {
			handoff_burst(other, worker, pkts, RPLB_BURST);
		} else if (o.mode == MODE_STEERED) {
			steered_burst(worker, pkts, RPLB_BURST);
		} else {
			worker->engine->process_burst(worker, RPLB_FRONTEND, pkts, RPLB_BURST);
			if (worker->engine->housekeeping != NULL)
				worker->engine->housekeeping(worker, rte_rdtsc(), 0);
		}
	}
	if (o.mode == MODE_REPLIES) {
		/* From now on the backends' replies of those flows. */
		for (i = 0; i < (int)n_frames; i++) {
			uint32_t ip;
			uint16_t port;

			client_of((uint64_t)i, &ip, &port);
			make_reply_frame(frames + (size_t)i * frame_len, lb, ip, port);
		}
		next = 0;
		/* Not through measured_reply_burst: callgrind counts every call
		 * of it, and the warm-up is no part of the measure. */
		for (b = 0; b < warm_bursts; b++) {
			prepare_burst(pool, pkts, frames, n_frames, &next, RPLB_BURST, 0);
			worker->engine->process_burst(worker, RPLB_BACKEND, pkts, RPLB_BURST);
			worker->engine->housekeeping(worker, rte_rdtsc(), 0);
		}
	}
	rplb_worker_flush(worker, RPLB_FRONTEND);
	rplb_worker_flush(worker, RPLB_BACKEND);
	if (o.mode == MODE_NEW)
		reset_flows(lb);
	counters = rplb_worker_counters(worker);
	uint64_t created_before = counters->events[RPLB_EV_FLOWS_CREATED];
	uint64_t to_backend_before = counters->events[RPLB_EV_TO_BACKEND];
	uint64_t to_client_before = counters->events[RPLB_EV_TO_CLIENT_FLOW];

	/* Time in chunks of bursts: the median chunk resists preemption by
	 * other processes on a shared machine, the fastest chunk shows the
	 * undisturbed cost. */
	uint64_t chunk_bursts = RTE_MAX(o.bursts / 64, (uint64_t)1);
	uint64_t n_chunks = 0, chunk_cycles = 0, chunk_left = chunk_bursts;
	double *chunk_ns = calloc(o.bursts / chunk_bursts + 1, sizeof(double));

	if (chunk_ns == NULL)
		die("calloc", ENOMEM);
	for (b = 0; b < o.bursts; b++) {
		uint64_t t0, dt;

		/* Keep the table between empty and half full: the operating point
		 * of a table sized twice the working set. */
		if (o.mode == MODE_NEW &&
		    lb->workers[0].flows->free_count < lb->workers[0].flows->capacity / 2) {
			reset_flows(lb);
			resets++;
		}
		prepare_burst(pool, pkts, frames, n_frames, &next, RPLB_BURST, o.mode == MODE_NEW);
		t0 = rte_rdtsc();
		if (o.mode == MODE_REPLIES)
			measured_reply_burst(worker, pkts, RPLB_BURST);
		else if (o.mode == MODE_HANDOFF)
			measured_burst_handoff(other, worker, pkts, RPLB_BURST);
		else if (o.mode == MODE_STEERED)
			measured_burst_steered(worker, pkts, RPLB_BURST);
		else
			measured_burst(worker, pkts, RPLB_BURST);
		dt = rte_rdtsc() - t0;
		cycles += dt;
		chunk_cycles += dt;
		timed_packets += RPLB_BURST;
		if (--chunk_left == 0) {
			chunk_ns[n_chunks++] = (double)chunk_cycles * 1e9 / (double)rte_get_tsc_hz() /
					       (double)(chunk_bursts * RPLB_BURST);
			chunk_cycles = 0;
			chunk_left = chunk_bursts;
		}
	}
	qsort(chunk_ns, n_chunks, sizeof(double), cmp_double);
	rplb_worker_flush(worker, RPLB_FRONTEND);
	rplb_worker_flush(worker, RPLB_BACKEND);

	double ns = (double)cycles * 1e9 / (double)rte_get_tsc_hz() / (double)timed_packets;
	printf("{\"mode\": \"%s\", \"flows\": %u, \"backends\": %u, \"flow_table_size\": %u, "
	       "\"packets\": %" PRIu64 ", \"ns_per_packet_mean\": %.2f, "
	       "\"ns_per_packet\": %.2f, \"ns_per_packet_min\": %.2f, \"chunks\": %" PRIu64 ", "
	       "\"cycles_per_packet_mean\": %.2f, "
	       "\"tsc_hz\": %" PRIu64 ", \"flows_created\": %" PRIu64 ", \"to_backend\": %" PRIu64
	       ", \"flow_table_resets\": %" PRIu64 ", \"passed_through\": %" PRIu64
	       ", \"flow_table_full\": %" PRIu64 ", \"to_client_by_flow\": %" PRIu64
	       ", \"mbufs_in_use\": %u}\n",
	       mode_names[o.mode],
	       o.flows, o.backends, o.flow_table, timed_packets, ns,
	       n_chunks ? chunk_ns[n_chunks / 2] : ns, n_chunks ? chunk_ns[0] : ns, n_chunks,
	       (double)cycles / (double)timed_packets, rte_get_tsc_hz(),
	       counters->events[RPLB_EV_FLOWS_CREATED] - created_before,
	       counters->events[RPLB_EV_TO_BACKEND] - to_backend_before, resets,
	       counters->events[RPLB_EV_PASSED_THROUGH],
	       counters->events[RPLB_EV_FLOW_TABLE_FULL],
	       counters->events[RPLB_EV_TO_CLIENT_FLOW] - to_client_before,
	       rte_mempool_in_use_count(pool));
	fflush(stdout);

	if (worker->engine->stop != NULL)
		worker->engine->stop(worker);
	rplb_worker_free(worker);
	if (other != NULL) {
		other->engine->stop(other);
		rplb_worker_free(other);
	}
	rplb_handoff_free(handoff);
	rte_eth_dev_stop(0);
	rte_eth_dev_stop(1);
	rte_eth_dev_close(0);
	rte_eth_dev_close(1);
	rplb_lb_free(lb);
	rte_mempool_free(pool);
	free(frames);
	free(chunk_ns);
out:
	snprintf(runtime_dir, sizeof(runtime_dir), "%s", rte_eal_get_runtime_dir());
	rte_eal_cleanup();
	/* EAL never removes its runtime directory; remove the one we named. */
	if (eal_argv == default_eal)
		nftw(runtime_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
	return 0;
}
