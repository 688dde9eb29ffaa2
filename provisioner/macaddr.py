"""MAC address parsing: every form an operator or a boot loader may send, one canonical form stored."""

import re

_HEX12 = re.compile(r"[0-9a-f]{12}")


class InvalidMAC(ValueError):
    pass


def canonical_mac(value: object) -> str:
    """Return ``aa:bb:cc:dd:ee:ff`` for any accepted spelling, or raise InvalidMAC.

    Accepted: ``aa:bb:cc:dd:ee:ff``, ``AA-BB-CC-DD-EE-FF``, ``aabb.ccdd.eeff`` (Cisco) and
    ``01-aa-bb-cc-dd-ee-ff`` (pxelinux: ARP hardware type 1 in front).
    """
    if not isinstance(value, str):
        raise InvalidMAC(f"MAC address must be a string, not {type(value).__name__}")
    text = value.strip().lower()
    groups = None
    if re.fullmatch(r"([0-9a-f]{2}[:-]){5}[0-9a-f]{2}", text):
        if ":" in text and "-" in text:
            raise InvalidMAC(f"{value!r} mixes ':' and '-' separators")
        groups = re.split(r"[:-]", text)
    elif re.fullmatch(r"01-([0-9a-f]{2}-){5}[0-9a-f]{2}", text):
        groups = text.split("-")[1:]
    elif re.fullmatch(r"[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}", text):
        flat = text.replace(".", "")
        groups = [flat[i:i + 2] for i in range(0, 12, 2)]
    if groups is None:
        raise InvalidMAC(
            f"{value!r} is not a MAC address (use aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, "
            "aabb.ccdd.eeff or 01-aa-bb-cc-dd-ee-ff)")
    mac = ":".join(groups)
    if int(groups[0], 16) & 1:
        raise InvalidMAC(f"{value!r} is a multicast address, not a NIC's")
    if mac == "00:00:00:00:00:00":
        raise InvalidMAC(f"{value!r} is the all-zero address, not a NIC's")
    return mac


def dashed(mac: str) -> str:
    """``aa-bb-cc-dd-ee-ff``: the form file names and pxelinux use."""
    return mac.replace(":", "-")
