"""rplb: a reverse-proxy (NAT-mode) L4 load balancer on DPDK.

The control plane is this package; the fast path is C (csrc/) reached
through the Cython bridge rplb.dataplane.  Public API:

- configuration (no EAL needed; validating loads the compiled extension
  for the fast path's limits): Config, Service, Backend, Timeouts,
  Fragments (what each worker keeps of IPv4 fragments), Health (a
  service's health check), HealthChecks (the appliance's own address on
  the backend network), ServiceKey, load_config, parse_config,
  dump_config, ConfigError;
- running: Appliance and Options (EAL, ports, workers; with health_checks
  its kernel interface and the health checks), Balancer (apply a
  configuration or edit services and backends atomically; backend states:
  set_disabled, backend_states), RplbError.
"""

from rplb.config import (Backend, Config, ConfigError, Fragments, Health, HealthChecks,
                         Service, ServiceKey, Timeouts, dump_config, load_config, parse_config)
from rplb.errors import RplbError

__all__ = ["Appliance", "Backend", "Balancer", "Config", "ConfigError", "Fragments", "Health",
           "HealthChecks", "Options", "RplbError", "Service", "ServiceKey", "SetupError",
           "Timeouts", "dump_config", "load_config", "parse_config"]


def __getattr__(name):
    # The DPDK-backed parts load on first use, so configuration tooling works
    # where the compiled extension or DPDK's libraries are absent.
    if name in ("Appliance", "Options", "SetupError"):
        from rplb import appliance
        return getattr(appliance, name)
    if name == "Balancer":
        from rplb.balancer import Balancer
        return Balancer
    raise AttributeError(f"module 'rplb' has no attribute {name!r}")
