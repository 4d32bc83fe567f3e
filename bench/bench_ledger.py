"""Bench: CDRs persisted per second by the ledger, end to end (Redis streams -> PostgreSQL), next to a bare COPY.

    .venv/bin/python bench/bench_ledger.py [--events 50000] [--accounts 500] [--refused 0.7] [--rounds 3]

A throw-away PostgreSQL database (migrated) and a Redis namespace of its own (database 12). Each round:
1. the streams are filled with EVENTS call events spread over ACCOUNTS customers (a share REFUSED of them
   refusals, as a refusal flood makes; the rest settled calls with a customer and a provider cost), as the
   switch writes them (one XADD per call);
2. the ledger (control/billing/ledger.py) records them all: the reads, the CDRs, the ledger entries and
   balances, the providers' live credits in Redis, the acknowledgements and the trimming - timed;
3. the baseline: the same rows through one bare COPY into a table shaped like cdrs (its indexes too), in the
   same run.
Reported per round: CDRs/s of each, their ratio, Redis CPU per CDR; at the end the conservation check
(sum of customer debits = sum of CDR customer costs, and the same for providers) and the goal (issue 11):
>= 5,000 CDRs/s end to end. The machine is shared and noisy: read the ratio next to the figure.
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import time

import _repo_path  # noqa: F401  (the repository root on sys.path)
import psycopg
import redis
from psycopg import sql

from callstate.events import FAILED, HANGUP, REFUSED, CallEvent
from callstate.store import CallState
from control import db
from control.billing.ledger import Ledger

PG = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/12"
GOAL_PER_SECOND = 5_000
PROVIDERS = 10


def make_events(count: int, customers: list[str], providers: list[str], refused_share: float,
                rng: random.Random) -> list[CallEvent]:
    now = time.time()
    made = []
    for n in range(count):
        customer = rng.choice(customers)
        setup = now - rng.uniform(0, 3600)
        common = dict(call_id=f"bench-{secrets.token_hex(6)}-{n}@10.0.0.1", account=customer, direction="outbound",
                      caller_id_received="4930123456", caller_id_presented="4930123456",
                      destination_dialled=f"44{rng.randrange(10**9):09d}", rate_group="g1", prefix="44",
                      rate_per_min=50_000, setup_time=setup)
        if rng.random() < refused_share:
            made.append(CallEvent(**common, destination_sent=common["destination_dialled"], end_time=setup,
                                  sip_code=503, sip_reason="CPS limit exceeded", stage="cps", end_reason=REFUSED))
            continue
        seconds = rng.randrange(0, 600)
        provider = rng.choice(providers)
        made.append(CallEvent(
            **common, destination_sent=common["destination_dialled"], trunk="t1", provider=provider,
            gateway="10.0.0.2:5060", answer_time=setup + 2 if seconds else None, end_time=setup + 2 + seconds,
            billable_seconds=seconds, sip_code=200 if seconds else 486, sip_reason="OK" if seconds else "Busy Here",
            end_reason=HANGUP if seconds else FAILED, customer_cost=seconds * 834, provider_cost=seconds * 500))
    return made


def fill(client: redis.Redis, state: CallState, events: list[CallEvent]) -> None:
    pipe = client.pipeline(transaction=False)
    for n, event in enumerate(events, 1):
        pipe.xadd(state.events_key(event.account), {"event": event.encode()})
        if n % 5_000 == 0:
            pipe.execute()
    pipe.execute()


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def record_all(ledger: Ledger, conn: psycopg.Connection, expected: int) -> int:
    recorded = 0
    while recorded < expected:
        done = ledger.record(conn)
        if done == 0:
            raise RuntimeError(f"the ledger stopped at {recorded} of {expected}")
        recorded += done
    return recorded


def bare_copy(conn: psycopg.Connection, events: list[CallEvent]) -> float:
    """Seconds for one COPY of the same rows into a fresh table shaped like cdrs (its indexes included)."""
    conn.execute("DROP TABLE IF EXISTS cdrs_baseline")
    conn.execute("CREATE TABLE cdrs_baseline (LIKE cdrs INCLUDING ALL)")
    conn.commit()
    columns = ("call_id", "account_number", "direction", "caller_id_received", "caller_id_presented",
               "destination_dialled", "destination_sent", "rate_group", "prefix", "rate_per_min", "trunk",
               "provider", "gateway", "billable_seconds", "sip_code", "sip_reason", "stage", "end_reason",
               "customer_cost", "provider_cost")
    started = time.perf_counter()
    with conn.cursor().copy(sql.SQL("COPY cdrs_baseline ({}) FROM STDIN").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)))) as copy:
        for event in events:
            copy.write_row(tuple(getattr(event, "account" if c == "account_number" else c) for c in columns))
    conn.commit()
    return time.perf_counter() - started


def conservation(conn: psycopg.Connection) -> tuple[bool, str]:
    row = conn.execute("""
        SELECT (SELECT coalesce(sum(customer_cost), 0) FROM cdrs),
               (SELECT coalesce(-sum(amount), 0) FROM ledger_entries WHERE position('/' in call_id) = 0),
               (SELECT coalesce(sum(provider_cost), 0) FROM cdrs),
               (SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE position('/' in call_id) > 0),
               (SELECT coalesce(sum(balance), 0) FROM accounts WHERE type = 'CUSTOMER'),
               (SELECT coalesce(sum(balance), 0) FROM accounts WHERE type = 'PROVIDER')""").fetchone()
    cdr_customer, debited, cdr_provider, credited, customer_balances, provider_balances = row
    held = cdr_customer == debited == -customer_balances and cdr_provider == credited == provider_balances
    return held, (f"customers: CDRs {cdr_customer}, debits {debited}, balances {-customer_balances}; "
                  f"providers: CDRs {cdr_provider}, credits {credited}, balances {provider_balances} (micros)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--refused", type=float, default=0.7, help="share of refusals among the events")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    name = f"tollgate_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(PG, dbname=name)
    client = redis.Redis.from_url(REDIS)
    namespace = f"tgbench{secrets.token_hex(3)}"
    try:
        db.migrate(dsn)
        rng = random.Random(7)
        with psycopg.connect(dsn) as conn:
            customers = [f"1{n:09d}" for n in range(args.accounts)]
            providers = [f"9{n:09d}" for n in range(PROVIDERS)]
            with conn.cursor().copy("COPY accounts (account_number, type, pin, email) FROM STDIN") as copy:
                for number in customers + providers:
                    copy.write_row((number, "CUSTOMER" if number[0] == "1" else "PROVIDER", number, f"{number}@b.x"))
            conn.commit()
        state = CallState(client, namespace)
        ledger = Ledger(state, client)
        rates, baselines = [], []
        print(f"{args.events:,} events per round over {args.accounts} customers, {args.refused:.0%} refused")
        for round_number in range(1, args.rounds + 1):
            events = make_events(args.events, customers, providers, args.refused, rng)
            fill(client, state, events)
            with psycopg.connect(dsn) as conn:
                cpu_before, started = redis_cpu(client), time.perf_counter()
                recorded = record_all(ledger, conn, len(events))
                elapsed = time.perf_counter() - started
                cpu = redis_cpu(client) - cpu_before
                copy_seconds = bare_copy(conn, events)
            left = sum(client.xlen(state.events_key(c)) for c in customers)
            rates.append(recorded / elapsed)
            baselines.append(len(events) / copy_seconds)
            print(f"round {round_number}: ledger {rates[-1]:9,.0f} CDRs/s ({elapsed:5.2f} s)   bare COPY "
                  f"{baselines[-1]:9,.0f} rows/s   ratio {rates[-1] / baselines[-1]:.2f}   Redis CPU "
                  f"{cpu / recorded * 1e6:5.1f} µs/CDR   entries left in Redis {left}")
        with psycopg.connect(dsn) as conn:
            held, detail = conservation(conn)
        median = statistics.median(rates)
        print(f"\nconservation: {'held' if held else 'BROKEN'}: {detail}")
        print(f"measured: ledger median {median:,.0f} CDRs/s, {median / statistics.median(baselines):.2f}x a bare "
              f"COPY of the same rows")
        met = "yes" if median >= GOAL_PER_SECOND and held else "NO"
        print(f"goal:     >= {GOAL_PER_SECOND:,} CDRs/s end to end, books balanced   met: {met}")
    finally:
        for key in client.scan_iter(f"{namespace}:*", count=1000):
            client.delete(key)
        client.close()
        with psycopg.connect(PG, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
