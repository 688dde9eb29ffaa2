"""Redfish over sushy: redfish://host[:port]/redfish/v1/Systems/<id> (HTTP) and redfish+https://."""

from __future__ import annotations

from urllib.parse import urlsplit

import sushy
from sushy import exceptions as sx
from sushy.auth import BasicAuth

from provisioner.power.base import OFF, ON, AuthFailed, DriverError, Unreachable


class RedfishDriver:
    def __init__(self, bmc, timeout: float, verify: bool | str = True):
        parts = urlsplit(bmc.url)
        scheme = "https" if bmc.scheme == "redfish+https" else "http"
        self._path = parts.path.rstrip("/")
        # Basic auth, not sessions: a BMC has a handful of session slots, and a session left
        # open by a killed client holds one until it times out (often 30 minutes).
        # sushy retries a request whose connection failed or timed out, whatever its method
        # (`server_side_retries or 3` times): a reset POST whose answer was lost would be sent
        # again. 1 is one attempt; retrying is control.py's, which knows what is safe to repeat.
        with _errors():
            self._conn = sushy.Sushy(f"{scheme}://{parts.netloc}/redfish/v1",
                                     auth=BasicAuth(bmc.username, bmc.password), verify=verify,
                                     server_side_retries=1, server_side_retries_delay=1,
                                     read_timeout=timeout, connect_timeout=timeout)
            self._system = self._conn.get_system(self._path)

    def power_state(self) -> str:
        with _errors():
            self._system.refresh(force=True)
            state = self._system.power_state
        if state in (sushy.POWER_STATE_ON, sushy.POWER_STATE_POWERING_OFF):
            return ON
        if state in (sushy.POWER_STATE_OFF, sushy.POWER_STATE_POWERING_ON):
            return OFF
        raise DriverError(f"the system reports power state {state!r}")

    def set_power(self, state: str) -> None:
        with _errors():
            self._system.reset_system(sushy.RESET_ON if state == ON else sushy.RESET_FORCE_OFF)

    def boot_pxe_once(self) -> None:
        with _errors():
            self._system.set_system_boot_options(target=sushy.BOOT_SOURCE_TARGET_PXE,
                                                 enabled=sushy.BOOT_SOURCE_ENABLED_ONCE)

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:       # closing a pool of sockets that may be dead already
            pass


class _errors:
    """sushy's exceptions as the drivers' three kinds."""

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if e is None:
            return False
        if isinstance(e, sx.AccessError):
            raise AuthFailed(f"the BMC refused the credentials (HTTP {e.status_code})") from None
        if isinstance(e, sx.ConnectionError):
            raise Unreachable(f"cannot reach the BMC: {_short(e)}") from None
        if isinstance(e, sx.ResourceNotFoundError):
            raise DriverError(f"no such system on the BMC ({_short(e)})") from None
        if isinstance(e, sx.SushyError):
            raise DriverError(_short(e)) from None
        return False


def _short(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:300] + "..."
