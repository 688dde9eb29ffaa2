import pytest

from provisioner.macaddr import InvalidMAC, canonical_mac, dashed


@pytest.mark.parametrize("text", [
    "52:54:00:0c:00:01",
    "52-54-00-0C-00-01",
    "52:54:00:0C:00:01",
    "5254.000c.0001",
    "5254.000C.0001",
    "01-52-54-00-0c-00-01",
    "  52:54:00:0c:00:01\n",
])
def test_every_accepted_form_gives_the_canonical_one(text):
    assert canonical_mac(text) == "52:54:00:0c:00:01"


@pytest.mark.parametrize("text", [
    "", "52:54:00:0c:00", "52:54:00:0c:00:01:02", "52:54:00:0c:00:0g", "52:54-00:0c:00:01",
    "5254000c0001", "02-52-54-00-0c-00-01", "01:52:54:00:0c:00:01", "5254.000c.00011",
    "../../etc/passwd", "52:54:00:0c:00:01/x", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01",
    "00:00:00:00:00:00", "５２:54:00:0c:00:01",
])
def test_malformed_or_non_nic_addresses_are_refused(text):
    with pytest.raises(InvalidMAC):
        canonical_mac(text)


@pytest.mark.parametrize("value", [None, 525400, ["52:54:00:0c:00:01"]])
def test_non_strings_are_refused(value):
    with pytest.raises(InvalidMAC, match="must be a string"):
        canonical_mac(value)


def test_dashed_is_the_pxelinux_file_form():
    assert dashed("52:54:00:0c:00:01") == "52-54-00-0c-00-01"
