"""bench/native_redirect.cfg's request route in Python (app_python3 or app_python3s): the floor any KEMI routing
pays here.

Per INVITE: max-forwards, the method, the source address looked up in a dict (native: htable), one HMGET
through ndb_redis, one branch and one header appended, 302. bench/kemi_floor.cfg loads it.
"""

import KSR


def _define(name: str) -> str:
    return KSR.kx.get_def(name).strip('"')


class Floor:
    def __init__(self) -> None:
        self.accounts = {"127.0.0.1": _define("FLOOR_ACCOUNT")}
        self.namespace = _define("FLOOR_NAMESPACE")
        self.contact = _define("FLOOR_CONTACT")

    def ksr_request_route(self, msg):
        if KSR.maxfwd.process_maxfwd(10) < 0:
            KSR.sl.send_reply(483, "Too Many Hops")
            return 1
        method = KSR.kx.get_method()
        if method == "OPTIONS" and KSR.is_myself_ruri() and not KSR.kx.gete_ruser():
            KSR.sl.send_reply(200, "Keepalive")
            return 1
        if method == "ACK":
            return 1
        if KSR.siputils.has_totag() > 0:
            KSR.sl.send_reply(404, "Not here")
            return 1
        if method != "INVITE":
            KSR.sl.send_reply(405, "Method Not Allowed")
            return 1
        account = self.accounts.get(KSR.kx.get_srcip())
        if account is None:
            KSR.sl.send_reply(403, "Forbidden")
            return 1
        if KSR.ndb_redis.redis_cmd_p1("tg", f"HMGET {self.namespace}:{{a:%s}}:money balance reserved", account,
                                      "r") < 0:
            KSR.sl.send_reply(500, "Redis unavailable")
            return 1
        if KSR.pv.get("$redis(r=>value[0])") is None:
            KSR.sl.send_reply(402, "Insufficient balance")
            return 1
        KSR.corex.append_branch_uri_q(self.contact, "1.000")
        KSR.hdr.append_to_reply(f"P-Asserted-Identity: <sip:{KSR.kx.gete_fuser()}@native>\r\n")
        KSR.sl.send_reply(302, "Moved Temporarily")
        return 1

    def child_init(self, rank: int) -> int:
        return 0

    def ksr_reply_route(self, msg):
        return 1


def mod_init():
    return Floor()


# app_python3s (Kamailio 6.0: bench_kamailio.py --kamailio 6.0) calls module-level functions, without the message.
_floor: Floor | None = None


def _the_floor() -> Floor:
    global _floor
    if _floor is None:
        _floor = Floor()
    return _floor


def ksr_request_route():
    return _the_floor().ksr_request_route(None)


def ksr_reply_route():
    return 1
