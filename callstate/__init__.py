"""The switch's live call state in Redis: what every Kamailio node must see the same (SPEC §5, §9).

Per account: the live balance and reservations, the open calls, the CPS counter, the settled call ids and
the stream of settled calls' events (the ledger's input). Per trunk: its busy channels and CPS counter.
Each change is one atomic Lua script (callstate/lua/*.lua) whose keys share one hash tag, so the same
scripts run on one Redis, Sentinel or Redis Cluster. Key names come from one place: callstate.keys.
"""
