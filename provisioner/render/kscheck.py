"""Check a rendered kickstart the way the installer would read it: pykickstart's RHEL 9 handler."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from pykickstart.errors import KickstartError
from pykickstart.parser import KickstartParser
from pykickstart.version import RHEL9, makeVersion


@dataclass
class KickstartCheck:
    errors: list[str]
    warnings: list[str]
    handler: object | None

    @property
    def ok(self) -> bool:
        return not self.errors and not self.warnings


def check_kickstart(text: str) -> KickstartCheck:
    """Parse `text` under RHEL9; every parser error and warning is reported, none is fatal here."""
    handler = makeVersion(RHEL9)
    parser = KickstartParser(handler, followIncludes=False)
    errors: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser.readKickstartFromString(text)
        except KickstartError as e:
            errors.append(str(e))
    found = [f"{w.category.__name__}: {w.message}" for w in caught
             if w.category.__module__.startswith("pykickstart")]
    return KickstartCheck(errors, found, None if errors else handler)
