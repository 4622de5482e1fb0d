"""Property tests for control requests: any request line yields a parsed
command or one clear ControlError, and against a running rplb any request
gets a reply (ok, or one error line) and a refused one changes nothing."""

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import LiveRplb, eal_args, file_prefix, write_pcap
from rplb.control import COMMANDS, ControlError, parse_request, request

FIELDS = sorted({name for spec in COMMANDS.values() for name in spec} | {"bogus"})
values = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=30),
                   st.sampled_from(["web", "dns", "192.168.1.10", "10.0.0.100:tcp:80",
                                    "300.1.1.1", "", "fd00::1", "[fd00::1]", "FD00:0::1",
                                    "[fd00::100]:tcp:80", "fd00::100:tcp:80", "fe80::1",
                                    "::ffff:10.0.0.1", "[10.0.0.100]:tcp:80", "::"]),
                   st.integers(0, 70000), st.lists(st.integers(), max_size=3),
                   st.dictionaries(st.sampled_from(["vip", "proto", "port", "backends",
                                                    "name"]),
                                   st.one_of(st.text(max_size=10), st.integers(0, 70000),
                                             st.sampled_from(["fd00::100", "tcp", "10.0.0.9"]),
                                             st.ip_addresses().map(str)),
                                   max_size=5))
requests = st.builds(
    lambda cmd, fields: {**({"cmd": cmd} if cmd is not None else {}), **fields},
    st.one_of(st.none(), st.sampled_from(sorted(COMMANDS)), st.text(max_size=12)),
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=5))

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "services.yaml"


@given(st.one_of(st.binary(max_size=200), requests.map(lambda r: json.dumps(r).encode())))
@settings(max_examples=400, deadline=None)
def test_any_line_parses_or_is_refused_clearly(line):
    try:
        cmd, fields = parse_request(line)
    except ControlError as err:
        text = str(err)
        assert text and "\n" not in text
        return
    assert cmd in COMMANDS
    assert set(fields) <= set(COMMANDS[cmd])


def test_any_request_to_a_running_rplb_gets_a_reply_and_refusals_change_nothing(tmp_path):
    empty = write_pcap(tmp_path / "empty.pcap", [])
    prefix = file_prefix()
    sock = str(tmp_path / "rplb.sock")
    live = LiveRplb([*eal_args(prefix, [f"net_pcap0,rx_pcap={empty},tx_pcap={tmp_path}/o0",
                                        f"net_pcap1,rx_pcap={empty},tx_pcap={tmp_path}/o1"]),
                     "--", "--config", str(EXAMPLE),
                     "--control-socket", sock], prefix, cwd=tmp_path)
    try:
        live.wait_for_stderr("forwarding with")
        seen = {"ok": 0, "refused": 0}

        @given(requests.filter(lambda r: r.get("cmd") not in ("save", "reload")))
        @settings(max_examples=150, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        def check(req):
            before = request(sock, {"cmd": "service.list"})
            reply = request(sock, req)
            assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool)
            if reply["ok"]:
                seen["ok"] += 1
                return
            seen["refused"] += 1
            assert reply["error"] and "\n" not in reply["error"]
            assert request(sock, {"cmd": "service.list"}) == before

        check()
        assert seen["refused"] > 0
        assert live.proc.poll() is None
    finally:
        rc, _ = live.stop()
    assert rc == 0
