/* SPDX-License-Identifier: BSD-3-Clause
 *
 * fuzz_engine.c: libFuzzer harness for the load-balancing engine.
 *
 * Drives the real engine (engine_lb.c, with its flow tables, tables and
 * RCU) as two workers on two net_null ports of two queues each, with
 * arbitrary frames on both sides arriving at either worker: each burst
 * goes through the receiving worker's steering pass (worker.c, steer.h),
 * which hands the frames of the other worker's clients over its ring, and
 * the other worker takes them when the input says so.  Interleaved: table
 * changes, clock jumps that make flows and fragmented datagrams expire,
 * flow samples, offloads, steering modes.  The rings are small
 * (RING_SIZE), so full rings happen.  The workers have the exception path
 * (a third net_null port as their kernel interface, a queue each,
 * LOCAL_ADDR its address), so frames for the appliance's own address take
 * it.  After every input each mbuf is either back in the pool or held by
 * a worker's fragment state, exactly as many as the workers say they hold;
 * then the fragment states are flushed (as when the workers stop) and
 * every mbuf must be back: a leak aborts like a crash.
 *
 * Input: a sequence of records  [op:1][len:2 little-endian][payload:len]
 *   op 0x00 / 0x01   one frame arriving on the frontend / backend port
 *   op 0x02 / 0x03   the same, flagged by the port's RX offload: L4 checksum bad
 *   op 0x04 / 0x05   a fragment of an IPv4 datagram, on the frontend / backend
 *                    port: payload [offset in 8-byte units:2 LE][length:2 LE]
 *                    [flags:1, bit 0 MF, bit 1 DF][the whole datagram's frame:
 *                    Ethernet + IPv4 + its payload]; the fragment takes the
 *                    datagram's headers and length bytes of its payload from
 *                    offset on (fewer where the payload ends), so series of
 *                    one datagram (in any order, overlapping, repeated) come
 *                    easily
 *   op 0x06 / 0x07   an ICMP error on the frontend / backend port: payload
 *                    [type:1][code:1][quoted bytes:2 LE][outer source:4]
 *                    [outer destination:4][the quoted IPv4 packet]; Ethernet,
 *                    IPv4 and ICMP headers around the first `quoted bytes`
 *                    of the packet, checksums computed
 *   op | 0x08        (0x08-0x0f) any of the above, arriving at worker 1 (else
 *                    worker 0)
 *   op 0x80          publish new tables described by the payload
 *   op 0x81          housekeeping of both workers, the clock moved payload[0]
 *                    seconds on
 *   op 0x82          a flow-sample request (payload[0]: how many) to worker
 *                    payload[2] & 1, answered by its housekeeping, unless
 *                    payload[1] bit 0 leaves it pending for a later request
 *                    to supersede
 *   op 0x83          the ports' checksum offloads from payload[0]'s bits: TX
 *                    frontend, TX backend, RX frontend, RX backend
 *   op 0x84          worker payload[0] & 1 takes what the other handed it
 *   op 0x85          steering in hardware (payload[0] bit 0) or software
 *   op 0x86          both workers stop: what is left in the rings is
 *                    discarded (counted); then they start again
 *
 * Build (clang):  CC=clang meson setup build-fuzz -Dfuzzer=true -Ddebug_checks=true \
 *                     -Dsanitizers=address,undefined
 *                 ninja -C build-fuzz tests/fuzz/rplb-fuzz-engine
 * Run:            build-fuzz/tests/fuzz/rplb-fuzz-engine tests/fuzz/corpus
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include "lb.h"
#include "lb_slow_paths.h"
#include "worker.h"

#define POOL_SIZE 4095
#define MAX_SERVICES_FUZZ 4
#define MAX_BACKENDS_PER_SERVICE 4
#define MAGLEV_SIZE 13
#define WORKERS 2
/* Entries of each handoff ring: small, so that an input fills one (drop
 * handoff_full). */
#define RING_SIZE 16
/* The appliance's own address: among the backends' (192.168.1.0-7 and
 * this) so that frames from both rate classes reach it. */
#define LOCAL_ADDR 0xc0a801fau    /* 192.168.1.250 (RTE_IPV4 shifts an int: UB for 192) */

static struct rte_mempool *pool;
static struct rplb_lb *lb;
static struct rplb_handoff *handoff;
static struct rplb_worker *workers[WORKERS];
static uint64_t clock_offset;
static uint32_t next_backend_generation;

static int
setup_port(uint16_t port_id)
{
	struct rte_eth_conf conf;
	uint16_t queue;

	memset(&conf, 0, sizeof(conf));
	if (rte_eth_dev_configure(port_id, WORKERS, WORKERS, &conf) < 0)
		return -1;
	for (queue = 0; queue < WORKERS; queue++)
		if (rte_eth_rx_queue_setup(port_id, queue, 128, rte_socket_id(), NULL, pool) < 0 ||
		    rte_eth_tx_queue_setup(port_id, queue, 128, rte_socket_id(), NULL) < 0)
			return -1;
	return rte_eth_dev_start(port_id) < 0 ? -1 : 0;
}

/* Both workers run on this one thread, each under its own RCU thread id
 * (its lcore_id, 0 and 1): out of the RCU around a publish, as workers
 * between bursts would be. */
static void
workers_offline(void)
{
	unsigned int w;

	for (w = 0; w < WORKERS; w++)
		rte_rcu_qsbr_thread_offline(lb->qsbr, workers[w]->lcore_id);
}

static void
workers_online(void)
{
	unsigned int w;

	for (w = 0; w < WORKERS; w++)
		rte_rcu_qsbr_thread_online(lb->qsbr, workers[w]->lcore_id);
}

static void
housekeeping_all(int idle)
{
	unsigned int w;

	for (w = 0; w < WORKERS; w++)
		workers[w]->engine->housekeeping(workers[w], rte_rdtsc() + clock_offset, idle);
}

/* Tables from fuzz bytes: 1-4 services on 10.0.0.x, 0-4 backends each,
 * weights and ports from the payload; Maglev slots round-robin over the
 * backends with weight > 0 (the fast path only needs owners in range).
 * Each has an IPv6 twin (lb_ipv6.c) on fd00::100 / fd00::101, its backends
 * fd00:1::0-7 with the same ports and weights, service id s * 7 + 2. */
static void
publish_tables(const uint8_t *p, size_t len)
{
	struct rplb_service_spec services[2 * MAX_SERVICES_FUZZ];
	struct rplb_backend_spec backends[2 * MAX_SERVICES_FUZZ * MAX_BACKENDS_PER_SERVICE];
	struct rplb_maglev *maglevs[2 * MAX_SERVICES_FUZZ];
	int32_t owners[MAGLEV_SIZE];
	uint32_t backend_ids[MAX_BACKENDS_PER_SERVICE];
	struct rplb_table_specs specs = {
		.services = services, .backends = backends, .maglevs = maglevs,
		.timeout_s = { 60, 10, 300, 10 },
	};
	uint32_t n_services, n_backends = 0, s, b, i;
	size_t at = 0;

#define NEXT() (at < len ? p[at++] : 0)
	n_services = NEXT() % MAX_SERVICES_FUZZ + 1;
	for (s = 0; s < n_services; s++) {
		uint32_t count = NEXT() % (MAX_BACKENDS_PER_SERVICE + 1);
		uint32_t live[MAX_BACKENDS_PER_SERVICE], n_live = 0;
		const uint32_t first = n_backends;

		services[s] = (struct rplb_service_spec){
			.vip = rte_cpu_to_be_32(0x0a000000u | (s & 1 ? 101 : 100)),
			.port = rte_cpu_to_be_16(s < 2 ? 80 : 53),
			.proto = (s & 2) ? IPPROTO_UDP : IPPROTO_TCP, .family = 4,
			.service_id = s * 7 + (NEXT() & 1),
		};
		for (b = 0; b < count; b++) {
			uint8_t pick = NEXT();

			backends[n_backends] = (struct rplb_backend_spec){
				.ip = rte_cpu_to_be_32(0xc0a80100u | (pick & 7)),
				.port = rte_cpu_to_be_16(8080 + b),
				.weight = NEXT() % 3,
				.backend_id = rplb_backend_id(s * MAX_BACKENDS_PER_SERVICE + b,
							      next_backend_generation + (pick >> 7)),
				.service_id = services[s].service_id,
			};
			backend_ids[b] = backends[n_backends].backend_id;
			if (backends[n_backends].weight > 0)
				live[n_live++] = b;
			n_backends++;
		}
		for (i = 0; i < MAGLEV_SIZE; i++)
			owners[i] = n_live ? (int32_t)live[i % n_live] : -1;
		maglevs[s] = n_live == 0 ? NULL :
			rplb_maglev_create(owners, MAGLEV_SIZE, backend_ids, n_backends - first,
					   rte_socket_id());
	}
#undef NEXT
	/* The IPv6 twins, after the IPv4 services (their slots after the
	 * IPv4 ones'). */
	{
		const uint32_t n_backends4 = n_backends;

		for (s = 0; s < n_services; s++) {
			struct rplb_service_spec *twin = &services[n_services + s];
			const uint32_t first = n_backends;

			*twin = services[s];
			twin->vip = 0;
			twin->family = 6;
			twin->service_id = s * 7 + 2;
			memset(twin->vip6, 0, sizeof(twin->vip6));
			twin->vip6[0] = 0xfd;
			twin->vip6[14] = 0x01;
			twin->vip6[15] = (s & 1) ? 0x01 : 0x00;
			for (b = 0; b < n_backends4; b++) {
				struct rplb_backend_spec *backend = &backends[n_backends];

				if (backends[b].service_id != services[s].service_id)
					continue;
				*backend = backends[b];
				backend->ip = 0;
				memset(backend->ip6, 0, sizeof(backend->ip6));
				backend->ip6[0] = 0xfd;
				backend->ip6[3] = 0x01;
				backend->ip6[15] = ((const uint8_t *)&backends[b].ip)[3];
				backend->service_id = twin->service_id;
				backend->backend_id = rplb_backend_id(
					MAX_SERVICES_FUZZ * MAX_BACKENDS_PER_SERVICE +
					rplb_backend_slot(backends[b].backend_id),
					rplb_backend_generation(backends[b].backend_id));
				n_backends++;
			}
			maglevs[n_services + s] = NULL;
			if (maglevs[s] != NULL) {
				for (b = first, i = 0; b < n_backends; b++, i++)
					backend_ids[i] = backends[b].backend_id;
				for (i = 0; i < MAGLEV_SIZE; i++)
					owners[i] = maglevs[s]->slots[i] == RPLB_NO_BACKEND ? -1 :
						(int32_t)(maglevs[s]->slots[i] % MAX_BACKENDS_PER_SERVICE);
				maglevs[n_services + s] = rplb_maglev_create(owners, MAGLEV_SIZE,
									     backend_ids,
									     n_backends - first,
									     rte_socket_id());
			}
		}
	}
	next_backend_generation = (next_backend_generation + 1) & 0xff;
	specs.strict = n_services & 1;
	n_services *= 2;
	specs.n_services = n_services;
	specs.n_backends = n_backends;
	/* The engines run on this very thread: step out of the RCU while
	 * publishing, as workers between bursts would.  Specs the tables
	 * refuse (e.g. two services with one key) change nothing. */
	workers_offline();
	rplb_lb_publish(lb, &specs);
	workers_online();
	for (s = 0; s < n_services; s++)
		rplb_maglev_release(maglevs[s]);
}

/* A flow-sample request for max entries, answered by the engine's
 * housekeeping as the worker would (flow_sample.h), into a buffer of
 * exactly max entries (ASan catches an answer that overflows it).  A
 * request left pending is superseded by the next one: its late answer must
 * never be taken for the next one's. */
static void
sample_flows(struct rplb_worker *worker, unsigned int max, int leave_pending)
{
	struct rplb_flow_sample_slot *slot =
		((struct rplb_lb_worker *)worker->engine_local)->sample;
	struct rplb_flow_sample *out = malloc(RTE_MAX(max, 1u) * sizeof(*out));
	uint32_t request;
	unsigned int calls = 0;
	int count, i;

	if (out == NULL)
		abort();
	request = rplb_flow_sample_post(slot, max);
	if (leave_pending) {
		free(out);
		return;
	}
	/* The table is small: one busy slice scans it, and a second call
	 * would be the most a pending request could add. */
	while ((count = rplb_flow_sample_take(slot, request, out, max)) == -EAGAIN) {
		if (++calls > 2)
			abort();
		worker->engine->housekeeping(worker, rte_rdtsc() + clock_offset, 0);
	}
	if (count < 0 || (unsigned int)count > RTE_MIN(max, (unsigned int)RPLB_FLOW_SAMPLE_MAX))
		abort();
	for (i = 0; i < count; i++)
		if (out[i].state >= RPLB_FLOW_STATES ||
		    (out[i].proto != IPPROTO_TCP && out[i].proto != IPPROTO_UDP))
			abort();
	free(out);
}

/* Op 0x04/0x05: the fragment the payload describes, into m (empty). */
static void
build_fragment(struct rte_mbuf *m, const uint8_t *payload, size_t len)
{
	const size_t head = 5, l2 = sizeof(struct rte_ether_hdr);
	const uint8_t *frame = payload + head;
	size_t frame_len = len > head ? len - head : 0, ihl, offset, length;
	struct rte_ipv4_hdr *ip;
	uint8_t *out;

	if (frame_len < l2 + sizeof(struct rte_ipv4_hdr)) {
		memcpy(rte_pktmbuf_append(m, (uint16_t)frame_len), frame, frame_len);
		return;
	}
	ihl = (frame[l2] & 0x0f) * 4u;
	if (ihl < sizeof(struct rte_ipv4_hdr) || l2 + ihl > frame_len)
		ihl = sizeof(struct rte_ipv4_hdr);
	offset = (size_t)(payload[0] | payload[1] << 8) * 8;
	length = payload[2] | (size_t)payload[3] << 8;
	if (offset > frame_len - l2 - ihl)
		offset = frame_len - l2 - ihl;
	length = RTE_MIN(length, frame_len - l2 - ihl - offset);
	length = RTE_MIN(length, (size_t)rte_pktmbuf_tailroom(m) - l2 - ihl);
	out = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)(l2 + ihl + length));
	memcpy(out, frame, l2 + ihl);
	memcpy(out + l2 + ihl, frame + l2 + ihl + offset, length);
	ip = (struct rte_ipv4_hdr *)(out + l2);
	ip->total_length = rte_cpu_to_be_16((uint16_t)(ihl + length));
	ip->fragment_offset = rte_cpu_to_be_16((uint16_t)((offset / 8) & RTE_IPV4_HDR_OFFSET_MASK) |
					       (payload[4] & 1 ? RTE_IPV4_HDR_MF_FLAG : 0) |
					       (payload[4] & 2 ? RTE_IPV4_HDR_DF_FLAG : 0));
	ip->hdr_checksum = 0;
	ip->hdr_checksum = rte_ipv4_cksum(ip);
}

/* Op 0x06/0x07: the ICMP error the payload describes, into m (empty). */
static void
build_icmp_error(struct rte_mbuf *m, const uint8_t *payload, size_t len)
{
	const size_t head = 12;
	size_t quoted = len > head ? len - head : 0, want;
	struct rte_ether_hdr *eth;
	struct rte_ipv4_hdr *ip;
	struct rte_icmp_hdr *icmp;
	uint8_t *out;

	if (len < head)
		return;
	want = payload[2] | (size_t)payload[3] << 8;
	quoted = RTE_MIN(RTE_MIN(quoted, want),
			 (size_t)rte_pktmbuf_tailroom(m) - sizeof(*eth) - sizeof(*ip) -
			 sizeof(*icmp));
	out = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)(sizeof(*eth) + sizeof(*ip) +
							   sizeof(*icmp) + quoted));
	memset(out, 0, sizeof(*eth) + sizeof(*ip) + sizeof(*icmp));
	eth = (struct rte_ether_hdr *)out;
	eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	ip = (struct rte_ipv4_hdr *)(eth + 1);
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->total_length = rte_cpu_to_be_16((uint16_t)(sizeof(*ip) + sizeof(*icmp) + quoted));
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_ICMP;
	memcpy(&ip->src_addr, payload + 4, 4);
	memcpy(&ip->dst_addr, payload + 8, 4);
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	icmp = (struct rte_icmp_hdr *)(ip + 1);
	icmp->icmp_type = payload[0];
	icmp->icmp_code = payload[1];
	memcpy(icmp + 1, payload + head, quoted);
	icmp->icmp_cksum = (uint16_t)~rte_raw_cksum(icmp, sizeof(*icmp) + quoted);
}

/* A burst received by worker from side: its steering pass, then its
 * engine on the frames it kept. */
static void
run_burst(struct rplb_worker *worker, unsigned int side, struct rte_mbuf **pkts, uint16_t *n)
{
	uint16_t kept;

	if (*n == 0)
		return;
	kept = rplb_worker_steer_burst(worker, side, pkts, *n);
	if (kept > 0)
		worker->engine->process_burst(worker, side, pkts, kept);
	*n = 0;
}

/* Each worker takes what the other handed it, until the rings are empty
 * (a frame taken is never handed over again: the taker owns it). */
static void
take_all(void)
{
	unsigned int w, taken;

	do {
		taken = 0;
		for (w = 0; w < WORKERS; w++)
			taken += rplb_worker_take_handed_over(workers[w]);
	} while (taken > 0);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char *eal_argv[] = { (*argv)[0], "--no-huge", "-m", "256", "--no-pci", "-l", "0",
			     "--no-shconf", "--log-level=*:error",
			     "--vdev", "net_null0,no-rx=1", "--vdev", "net_null1,no-rx=1",
			     "--vdev", "net_null2,no-rx=1", NULL };
	struct rplb_lb_params lb_params = {
		/* 108 flows: 32 buckets 84% full when the table is, so inserts
		 * take cuckoo moves and the table fills (flow_table_full). */
		.flow_table_size = 108, .max_workers = WORKERS,
		.timeout_s = { 60, 10, 300, 10 }, .socket_id = SOCKET_ID_ANY,
		/* Small fragment bounds, so that inputs reach them: a full table
		 * evicts, a held fragment beyond 12 is refused, and a clock jump
		 * of 3 s expires datagrams. */
		.fragment_datagrams = 6, .fragment_held = 12, .fragment_timeout_s = 2,
	};
	unsigned int w;

	if (rte_eal_init(RTE_DIM(eal_argv) - 1, eal_argv) < 0)
		abort();
	pool = rte_pktmbuf_pool_create("fuzz", POOL_SIZE, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
				       rte_socket_id());
	if (pool == NULL || setup_port(0) < 0 || setup_port(1) < 0 || setup_port(2) < 0)
		abort();
	lb = rplb_lb_create(&lb_params);
	handoff = rplb_handoff_create_with_rings(WORKERS, RING_SIZE, rte_socket_id());
	if (lb == NULL || handoff == NULL)
		abort();
	for (w = 0; w < WORKERS; w++) {
		struct rplb_worker_params params = {
			.frontend_port = 0, .backend_port = 1, .rx_queue = w, .tx_queue = w,
			.drain_us = 100, .socket_id = SOCKET_ID_ANY,
			.handoff = handoff, .handoff_index = w,
			/* A low rate: inputs with many frames to the kernel hit it. */
			.local_addr = RTE_BE32(LOCAL_ADDR), .kernel_port = 2, .kernel_queue = w,
			.kernel_rate = 1000, .kernel_burst = 8,
		};

		/* Offloads on one side, software on the other (op 0x83
		 * changes them). */
		params.tx_cksum_offload[RPLB_FRONTEND] = 1;
		params.rx_cksum_offload[RPLB_BACKEND] = 1;
		/* Lcore ids 0 and 1 name the two workers in the RCU and the
		 * engine (lb_start finds its flow table by it); both run here. */
		if (rplb_lb_add_worker(lb, w) < 0)
			abort();
		workers[w] = rplb_worker_create(&params, rplb_engine_lb(), lb);
		if (workers[w] == NULL)
			abort();
		workers[w]->lcore_id = w;
		if (workers[w]->engine->start(workers[w]) != 0)
			abort();
	}
	publish_tables((const uint8_t *)"\x03\x03\x01\x02\x05\x01\x01\x02\x00\x02", 10);
	return 0;
}

static const uint8_t rss_key[RPLB_RSS_KEY_LEN] = {
	0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
	0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
	0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rte_mbuf *pkts[RPLB_BURST];
	uint16_t n = 0;
	unsigned int burst_side = 0, burst_worker = 0, w, side, held;
	size_t at = 0;

	while (at + 3 <= size) {
		uint8_t op = data[at];
		size_t len = data[at + 1] | (size_t)data[at + 2] << 8;
		const uint8_t *payload = data + at + 3;

		if (len > size - at - 3)
			len = size - at - 3;
		at += 3 + len;

		if (op >= 0x80)
			run_burst(workers[burst_worker], burst_side, pkts, &n);
		if (op == 0x80) {
			publish_tables(payload, len);
		} else if (op == 0x81) {
			clock_offset += (uint64_t)(len ? payload[0] : 1) * rte_get_tsc_hz();
			housekeeping_all(1);
		} else if (op == 0x82) {
			sample_flows(workers[len > 2 ? payload[2] & 1 : 0], len ? payload[0] : 8,
				     len > 1 && (payload[1] & 1));
		} else if (op == 0x83) {
			for (w = 0; w < WORKERS; w++)
				for (side = 0; side < RPLB_SIDES && len > 0; side++) {
					workers[w]->tx_cksum_offload[side] = (payload[0] >> side) & 1;
					workers[w]->rx_cksum_offload[side] = (payload[0] >> (2 + side)) & 1;
				}
		} else if (op == 0x84) {
			rplb_worker_take_handed_over(workers[len ? payload[0] & 1 : 0]);
		} else if (op == 0x85) {
			if (len > 0 && (payload[0] & 1)) {
				if (rplb_handoff_steer_in_hardware(handoff, rss_key, sizeof(rss_key),
								   128) != 0)
					abort();
			} else {
				handoff->steering.mode = RPLB_STEER_SOFTWARE;
				handoff->steering.reta_mask = RPLB_STEER_RETA_SIZE - 1;
			}
		} else if (op == 0x86) {
			/* What rplb does at shutdown: every worker stopped, then
			 * the rings emptied; here they start again. */
			for (w = 0; w < WORKERS; w++) {
				rplb_worker_flush(workers[w], RPLB_FRONTEND);
				rplb_worker_flush(workers[w], RPLB_BACKEND);
				rplb_worker_flush_kernel(workers[w]);
				workers[w]->engine->stop(workers[w]);
			}
			for (w = 0; w < WORKERS; w++)
				rplb_worker_discard_handed_over(workers[w]);
			for (w = 0; w < WORKERS; w++)
				if (workers[w]->engine->start(workers[w]) != 0)
					abort();
		} else if ((op & ~0x08) <= 0x07) {
			const unsigned int frame_op = op & 0x07;
			struct rte_mbuf *m;

			if ((op & 1) != burst_side || ((op >> 3) & 1) != burst_worker ||
			    n == RPLB_BURST)
				run_burst(workers[burst_worker], burst_side, pkts, &n);
			burst_side = op & 1;
			burst_worker = (op >> 3) & 1;
			m = rte_pktmbuf_alloc(pool);
			if (m == NULL)
				abort();    /* the previous input leaked */
			if (frame_op >= 0x06) {
				build_icmp_error(m, payload, len);
			} else if (frame_op >= 0x04) {
				build_fragment(m, payload, len);
			} else {
				if (len > rte_pktmbuf_tailroom(m))
					len = rte_pktmbuf_tailroom(m);
				memcpy(rte_pktmbuf_append(m, (uint16_t)len), payload, len);
			}
			if (frame_op == 0x02 || frame_op == 0x03)
				m->ol_flags |= RTE_MBUF_F_RX_IP_CKSUM_GOOD | RTE_MBUF_F_RX_L4_CKSUM_BAD;
			/* As a port's rx sets it: the taker of a handed-over frame
			 * reads its side from it. */
			m->port = workers[burst_worker]->port_id[burst_side];
			pkts[n++] = m;
		}
	}
	run_burst(workers[burst_worker], burst_side, pkts, &n);
	take_all();
	for (w = 0; w < WORKERS; w++) {
		rplb_worker_flush(workers[w], RPLB_FRONTEND);
		rplb_worker_flush(workers[w], RPLB_BACKEND);
		rplb_worker_flush_kernel(workers[w]);
	}
	housekeeping_all(0);
	/* Out of the pool: exactly the fragments the workers hold, each
	 * within its bound. */
	held = 0;
	for (w = 0; w < WORKERS; w++) {
		const struct rplb_fragment_table *fragments = lb->workers[w].fragments;

		if (fragments->n_held > fragments->max_held) {
			fprintf(stderr, "worker %u holds %u fragments, over its bound of %u\n", w,
				fragments->n_held, fragments->max_held);
			abort();
		}
		held += fragments->n_held;
	}
	if (rte_mempool_in_use_count(pool) != held) {
		fprintf(stderr, "leak: %u mbufs not returned, %u fragments held\n",
			rte_mempool_in_use_count(pool), held);
		abort();
	}
	/* Each input starts without fragments, as restarted workers would. */
	for (w = 0; w < WORKERS; w++)
		rplb_lb_flush_fragments(workers[w]);
	if (rte_mempool_in_use_count(pool) != 0) {
		fprintf(stderr, "leak: %u mbufs not returned after the fragment state was flushed\n",
			rte_mempool_in_use_count(pool));
		abort();
	}
	return 0;
}
