"""Addresses and image names of the local test hosts (tests/support/local_host.py)."""

import ipaddress

import local_host
import pytest


def test_a_tag_less_image_means_its_current_tag():
    assert local_host.image_ref("localhost/rhoim-test-host") == "localhost/rhoim-test-host:current"
    assert local_host.image_ref("localhost/rhoim-test-host-vllm:abc123") == "localhost/rhoim-test-host-vllm:abc123"
    # A registry port is not a tag.
    assert local_host.image_ref("127.0.0.1:5000/rhoim/os") == "127.0.0.1:5000/rhoim/os:current"


def test_the_address_a_host_had_is_kept_when_free():
    assert local_host.pick_address("h", "10.89.3.0/24", "10.89.3.1", ["10.89.3.7"], recorded="10.89.3.9") == "10.89.3.9"


def test_a_recorded_address_that_is_taken_or_elsewhere_is_not_reused():
    taken = local_host.pick_address("h", "10.89.3.0/24", "10.89.3.1", ["10.89.3.9"], recorded="10.89.3.9")
    assert taken != "10.89.3.9"
    moved = local_host.pick_address("h", "10.89.3.0/24", "10.89.3.1", [], recorded="10.89.4.9")
    assert ipaddress.ip_address(moved) in ipaddress.ip_network("10.89.3.0/24")


def test_the_address_follows_the_name_and_avoids_gateway_and_used():
    first = local_host.pick_address("rhoim-model-host", "10.89.3.0/24", "10.89.3.1", [])
    assert first == local_host.pick_address("rhoim-model-host", "10.89.3.0/24", "10.89.3.1", [])
    second = local_host.pick_address("rhoim-model-host", "10.89.3.0/24", "10.89.3.1", [first])
    assert second not in (first, "10.89.3.1", "10.89.3.0", "10.89.3.255")


def test_a_full_network_is_a_clear_error():
    used = [str(a) for a in ipaddress.ip_network("10.89.3.0/29").hosts()]
    with pytest.raises(local_host.HostError, match=r"no free address left on 10\.89\.3\.0/29"):
        local_host.pick_address("h", "10.89.3.0/29", "10.89.3.1", used)


def test_each_host_name_has_its_own_fixed_mac_address():
    mac = local_host.mac_address("rhoim-model-host")
    assert mac == local_host.mac_address("rhoim-model-host")
    assert mac != local_host.mac_address("rhoim-model-hub")
    octets = [int(o, 16) for o in mac.split(":")]
    assert len(octets) == 6
    # Locally administered, unicast.
    assert octets[0] & 0b10 and not octets[0] & 0b1
