"""PMD discovery with pyelftools (no EAL)."""

from rplb import pmdinfo


def test_net_pcap_and_its_arguments_are_found():
    drivers = {d.name: d for d in pmdinfo.list_drivers()}
    assert {"net_pcap", "net_null", "net_af_packet", "net_tap"} <= set(drivers)
    # DPDK's string runs "phy_mac=<int>infinite_rx=<0|1>" together: still two arguments.
    assert drivers["net_pcap"].arguments == ["rx_pcap", "tx_pcap", "rx_iface", "rx_iface_in",
                                             "tx_iface", "iface", "phy_mac", "infinite_rx"]
    assert drivers["net_null"].arguments == ["size", "copy", "no-rx"]


def test_a_file_without_pmd_info_yields_nothing(tmp_path):
    import sys
    assert pmdinfo.read_pmd_file(sys.executable) == []
