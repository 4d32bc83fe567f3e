"""Bench: a login flood against the control service, and what it does to every other RPC.

    .venv/bin/python bench/bench_login_flood.py [--threads 4] [--seconds 10]

A throw-away PostgreSQL database and Redis database 13. Three phases, each with a reader thread timing
GetCompany and ListAccounts (the "other RPCs"):
1. quiet: nobody logs in (the baseline);
2. flood, throttle out of reach: THREADS threads log in with wrong passwords for unknown logins as fast as they
   can, and the per-login and per-source limits are set too high to trigger: every attempt that is let in costs
   an Argon2 check, so this measures the bound on password checks (password_checks, password_checks_waiting);
3. flood, default throttle: the same, with the service's default limits (the source is locked after 100
   failures, and every further attempt is refused without a check).
Reported per phase: p50/p99 of the other RPCs, and p50/p99 and outcomes of the logins. The machine is shared
and noisy: read the phases against each other, not the milliseconds.
"""

from __future__ import annotations

import argparse
import collections
import secrets
import statistics
import threading
import time

import _repo_path  # noqa: F401  (the repository root on sys.path)
import grpc
import psycopg
from psycopg import sql

from control.config import Config
from control.server import create_server
from tests.helpers import stubs_for
from tollgate.v1 import account_pb2, auth_pb2, company_pb2

PG = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/13"
OUT_OF_REACH = 10**9


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(values: list[float]) -> str:
    return f"p50 {percentile(values, 0.5) * 1000:7.1f} ms  p99 {percentile(values, 0.99) * 1000:7.1f} ms" \
           f"  (n={len(values)})"


def reader(stubs, stop: threading.Event, timings: list[float]) -> None:
    while not stop.is_set():
        for call in (lambda: stubs.company.GetCompany(company_pb2.GetCompanyRequest(), metadata=stubs.metadata),
                     lambda: stubs.accounts.ListAccounts(account_pb2.ListAccountsRequest(page_size=10),
                                                         metadata=stubs.metadata)):
            started = time.perf_counter()
            call()
            timings.append(time.perf_counter() - started)
        time.sleep(0.005)


def flooder(stubs, stop: threading.Event, timings: list[float], outcomes: collections.Counter) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        try:
            stubs.auth.Login(auth_pb2.LoginRequest(login=f"{secrets.token_hex(6)}@flood.example", password="wrong"),
                             timeout=30)
            outcomes["OK"] += 1
        except grpc.RpcError as err:
            outcomes[err.code().name] += 1
        timings.append(time.perf_counter() - started)


def phase(stubs, threads: int, seconds: float) -> tuple[list[float], list[float], collections.Counter]:
    stop = threading.Event()
    other: list[float] = []
    logins: list[float] = []
    outcomes: collections.Counter = collections.Counter()
    workers = [threading.Thread(target=reader, args=(stubs, stop, other))]
    workers += [threading.Thread(target=flooder, args=(stubs, stop, logins, outcomes)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    return other, logins, outcomes


def run_phase(dsn: str, name: str, threads: int, seconds: float, **limits) -> None:
    token = "tga_" + secrets.token_urlsafe(16)
    running = create_server(Config(listen="127.0.0.1:0", metrics_listen="", dsn=dsn, redis_url=REDIS,
                                   redis_namespace="benchflood",
                                   admin_tokens=(token,), plaintext=True, **limits))
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM login_throttle")  # each phase starts without the last one's locks
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stubs = stubs_for(channel, token)
            other, logins, outcomes = phase(stubs, threads, seconds)
    finally:
        running.stop(grace=0)
    print(f"{name}")
    print(f"  other RPCs  {_ms(other)}")
    if logins:
        print(f"  Login       {_ms(logins)}  outcomes {dict(outcomes)}"
              f"  ({sum(outcomes.values()) / seconds:.0f}/s, median {statistics.median(logins) * 1000:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4, help="flooding threads (default 4)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase (default 10)")
    args = parser.parse_args()
    name = f"tollgate_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(PG, dbname=name)
    try:
        run_phase(dsn, "quiet", 0, args.seconds)
        run_phase(dsn, f"flood of {args.threads}, throttle out of reach (every attempt checks a password)",
                  args.threads, args.seconds, login_free_attempts=OUT_OF_REACH, login_max_attempts=OUT_OF_REACH,
                  login_source_free_attempts=OUT_OF_REACH, login_source_max_attempts=OUT_OF_REACH)
        run_phase(dsn, f"flood of {args.threads}, default throttle", args.threads, args.seconds)
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
