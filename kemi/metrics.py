"""The node's Prometheus metrics as the Python script updates them (README "Metrics"; declared in kamailio.cfg).

Only from where Python already runs for the call - the INVITE's decision, the call's settlement - so that a
metric never costs an entry into Python of its own: each update is one KSR.xhttp_prom call (a locked add in
Kamailio's shared memory). Events that are native (shedding) are counted in kamailio.cfg itself. A node
rendered without metrics gets Off, whose methods do nothing and call no KSR at all.
"""

from __future__ import annotations

import KSR

# calls_total's outcome label: how a call that reached the script ended (kamailio.cfg adds "shed")
ANSWERED = "answered"  # relayed and answered (counted at its end)
UNANSWERED = "unanswered"  # relayed, never answered: busy, cancelled, no answer, every gateway failed
REFUSED = "refused"  # refused before it was relayed or redirected (refusals_total says at which stage)
REDIRECTED = "redirected"  # answered 302 (routing-server mode)
FAILED = "failed"  # the switch's own fault: Redis unreachable, routing data not loaded, a local relay failure


class Off:
    """Metrics left out of kamailio.cfg (render.py metrics_listen=""): nothing to update."""

    def call(self, outcome: str, code: int) -> None:
        """One INVITE's final answer."""

    def refused(self, stage: str, code: int) -> None:
        """A call refused at `stage` (also a call, outcome REFUSED)."""

    def decided(self, seconds: float) -> None:
        """How long the INVITE was in Python: identify, decide, admit, relay or answer."""

    def admitted(self, seconds: float) -> None:
        """The admission's Redis round trip (the EVALSHA through ndb_redis, or redis-py's fallback)."""

    def projection(self, version: int, synced_at: float) -> None:
        """The projection this worker serves (its highest family version) and when it last checked Redis."""


class Prometheus(Off):
    """Kamailio's xhttp_prom, through KSR (metric names without the "tollgate_sip_" kamailio.cfg prefixes)."""

    def call(self, outcome: str, code: int) -> None:
        KSR.xhttp_prom.counter_inc_l2("calls_total", 1, outcome, str(code))

    def refused(self, stage: str, code: int) -> None:
        KSR.xhttp_prom.counter_inc_l1("refusals_total", 1, stage or "unknown")
        self.call(REFUSED, code)

    def decided(self, seconds: float) -> None:
        KSR.xhttp_prom.histogram_observe_l0("decision_seconds", f"{seconds:.6f}")

    def admitted(self, seconds: float) -> None:
        KSR.xhttp_prom.histogram_observe_l0("admission_rtt_seconds", f"{seconds:.6f}")

    def projection(self, version: int, synced_at: float) -> None:
        KSR.xhttp_prom.gauge_set_l0("projection_version", str(version))
        KSR.xhttp_prom.gauge_set_l0("projection_synced_timestamp_seconds", f"{synced_at:.3f}")


def for_setting(value: str) -> Off:
    """kamailio.cfg's TOLLGATE_METRICS ("on" / "off") -> the metrics object the script updates."""
    return Prometheus() if value == "on" else Off()
