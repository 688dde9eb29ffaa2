"""IPMI 2.0 (RMCP+, UDP) over pyghmi: ipmi://host[:port]."""

from __future__ import annotations

import hashlib
import threading
from urllib.parse import urlsplit

from provisioner.power.base import OFF, ON, AuthFailed, DriverError, Unreachable


def _honour_the_bmcs_cipher_suite() -> None:
    """pyghmi proposes cipher suite 17 (SHA-256) and goes on as if the BMC had taken it
    ("we take it for granted that the responder accepted our proposal", its session.py), but
    the open-session response names the suite the BMC chose. A BMC that answers suite 3
    (SHA-1), as VirtualBMC and older BMCs do, then fails the login with struct.error in RAKP 2.
    Read the BMC's choice (RMCP+ open session response, IPMI 2.0 table 13-12: the
    authentication algorithm at byte 16, integrity at 24) before pyghmi goes on."""
    from pyghmi.ipmi.private import session
    original = session.Session._got_rmcp_response
    if getattr(original, "honours_the_bmc", False):
        return

    def got_rmcp_response(self, data):
        if (len(data) >= 36 and data[1] == 0 and getattr(self, "attemptedhash", None) == 256
                and data[0] == getattr(self, "rmcptag", None) and data[16] == 1 and data[24] == 1):
            self.attemptedhash = 1
            self.currhashlib = hashlib.sha1
            self.currhashlen = 12
        return original(self, data)
    got_rmcp_response.honours_the_bmc = True
    session.Session._got_rmcp_response = got_rmcp_response


# One pyghmi Command per BMC and user, kept for the process's life, each used by one action at a
# time. pyghmi keeps the session under it (and logs in again when the BMC has dropped it); a
# second Command for the same BMC and user is handed that session half-way through its own
# bookkeeping and waits forever (pyghmi 1.6.19 against VirtualBMC), and logging out after each
# action instead leaves the next login a TypeError.
_commands: dict[tuple, tuple[object, threading.Lock]] = {}
_commands_lock = threading.Lock()


class IpmiDriver:
    def __init__(self, bmc, timeout: float):
        from pyghmi import exceptions as px
        from pyghmi.ipmi import command
        _honour_the_bmcs_cipher_suite()
        parts = urlsplit(bmc.url)
        self._px = px
        self._key = (parts.hostname, parts.port or 623, bmc.username,
                     hashlib.sha256(bmc.password.encode()).hexdigest())
        with _commands_lock:
            entry = _commands.get(self._key)
            if entry is None:
                entry = _commands[self._key] = (None, threading.Lock())
        self._lock = entry[1]
        self._lock.acquire()
        try:
            self._cmd = _commands[self._key][0]
            if self._cmd is None:
                # keepalive off: pyghmi would otherwise ping every idle session from its own
                # thread for as long as the process runs, holding a session slot on every BMC
                self._cmd = command.Command(bmc=parts.hostname, userid=bmc.username, password=bmc.password,
                                            port=parts.port or 623, keepalive=False)
                _commands[self._key] = (self._cmd, self._lock)
        except px.IpmiException as e:
            self._lock.release()
            raise _classify(e) from None
        except OSError as e:        # a name that does not resolve, no route
            self._lock.release()
            raise Unreachable(f"cannot reach the BMC: {e}") from None
        except BaseException:
            self._lock.release()
            raise
        self._timeout = timeout

    def power_state(self) -> str:
        state = self._call(self._cmd.get_power)["powerstate"]
        if state not in (ON, OFF):
            raise DriverError(f"the BMC reports power state {state!r}")
        return state

    def set_power(self, state: str) -> None:
        # wait=False: the caller polls power_state against its own deadline
        self._call(self._cmd.set_power, state, wait=False)

    def boot_pxe_once(self) -> None:
        self._call(self._cmd.set_bootdev, "network", persist=False)

    def close(self) -> None:
        # not logged out (see _commands): the session lapses on the BMC's idle timeout
        self._lock.release()

    def _call(self, fn, *args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except self._px.IpmiException as e:
            with _commands_lock:        # a broken session: the next action starts a new one
                _commands.pop(self._key, None)
            raise _classify(e) from None
        if isinstance(result, dict) and "error" in result:
            raise DriverError(str(result["error"]))
        return result


def _classify(e: Exception) -> DriverError:
    text = str(e)
    low = text.lower()
    if "unauthorized name" in low or "password" in low or "incorrect" in low or "rakp" in low \
            or "privilege" in low or "authentication" in low:
        return AuthFailed(f"the BMC refused the credentials ({text})")
    # pyghmi gives up on a BMC that never answers with no message at all
    if text in ("", "None") or "timeout" in low or "timed out" in low or "no response" in low \
            or "unreachable" in low or "no longer connected" in low:
        return Unreachable(f"cannot reach the BMC: {text}")
    return DriverError(text)
