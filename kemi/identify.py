"""Who is calling (SPEC §5 first step, §8): SIP digest for devices, source address + tech prefix for accounts.

Digest credentials are accepted only for the request they were made for: the nonce (auth module, see
kamailio.cfg) is bound to the Request-URI, Call-ID and source address and expires soon, its nonce count must
grow, the digest `uri` must be this Request-URI and the algorithm the one challenged with (MD5). Anything
else - replayed, stale, for another URI, another algorithm - gets a fresh challenge, never a call. Runs inside
Kamailio (KSR).
"""

from __future__ import annotations

from dataclasses import dataclass

import KSR

from fastpath.decision import MAX_DIALLED
from fastpath.model import ACTIVE, Device, account_for_source
from fastpath.runtime import FastPath
from kemi.metrics import Off

QOP_AUTH = 1  # auth_challenge flags: qop=auth
STALE = 16  # ... and stale=true (same password, new nonce)
CHALLENGED_ALGORITHMS = ("", "md5")  # what the credentials may say (kamailio.cfg challenges with MD5)
STALE_OR_REUSED = (-4, -6)  # pv_auth_check: nonce expired or bound to another request; nonce count reused


@dataclass
class Caller:
    account: str
    caller_id: str  # the From user, as received
    dialled: str  # the R-URI user without its parameters (and without the tech prefix when IP-authenticated)


def dialled_number() -> str | None:
    """The R-URI user without URI parameters (`;npdi;rn=...` is never forwarded); None when too long."""
    user = (KSR.kx.gete_ruser() or "").split(";", 1)[0]
    return user if len(user) <= MAX_DIALLED else None


def caller(fast: FastPath, realm: str, dialled: str, metrics: Off | None = None) -> Caller | None:
    """The INVITE's caller, or None once the request has been answered (challenge or 403, which `metrics`
    counts as a refusal at stage "auth"): digest when it carries credentials for our realm, else the source
    address's IP map, else a challenge."""
    if KSR.auth.has_credentials(realm) > 0:
        device = authenticated_device(fast, realm, register=False, metrics=metrics)
        if device is None:
            return None
        return Caller(device.account, KSR.kx.gete_fuser() or "", dialled)
    mapped = account_for_source(fast.world, KSR.kx.get_srcip(), dialled)
    if mapped is None:
        KSR.auth.auth_challenge(realm, QOP_AUTH)
        return None
    account, without_prefix = mapped
    return Caller(account, KSR.kx.gete_fuser() or "", without_prefix)


def authenticated_device(fast: FastPath, realm: str, register: bool, metrics: Off | None = None) -> Device | None:
    """The device whose credentials this request carries, or None once the request has been answered: no
    credentials, or credentials not for this request -> a fresh challenge (not a refusal: the caller retries);
    unknown device or a wrong password -> 403. For a REGISTER the credentials' user must be the To user."""
    if KSR.auth.has_credentials(realm) < 0 or not _for_this_request():
        KSR.auth.auth_challenge(realm, QOP_AUTH)
        return None
    device = fast.world.devices.get(KSR.kx.gete_au() or "")
    if device is None or device.status != ACTIVE or device.realm != realm:
        return _forbidden(metrics)
    rc = KSR.auth.pv_auth_check(realm, device.ha1, 1, 1 if register else 0)  # 1: the password is an HA1
    if rc in STALE_OR_REUSED:
        KSR.auth.auth_challenge(realm, QOP_AUTH | STALE)
        return None
    if rc < 0:
        return _forbidden(metrics)
    KSR.auth.consume_credentials()
    return device


def _forbidden(metrics: Off | None) -> None:
    KSR.sl.send_reply(403, "Forbidden")
    if metrics is not None:
        metrics.refused("auth", 403)


def _for_this_request() -> bool:
    """The digest was computed for this Request-URI with the algorithm we challenged with (the auth module
    checks neither)."""
    algorithm = (KSR.pv.get("$aa") or "").lower()
    return algorithm in CHALLENGED_ALGORITHMS and KSR.pv.get("$adu") == KSR.pv.get("$ou")
