"""Bench: a 1,000,000-row rate deck import and its Redis projection, against baselines in the same run.

    .venv/bin/python bench/bench_config.py [--rows 1000000]

Uses a throw-away PostgreSQL database and Redis database 13. Baselines, measured on the same data:
- import: a bare COPY of the same rows into an unindexed, unchecked table (the floor for any import);
- publish (read PostgreSQL, lay the deck image out, write its chunks): writing the same chunks to Redis again
  (the floor for any projection);
- load (what a fast-path process waits for at start or on a swap: the image from Redis into its file, mapped,
  one lookup): reading the same bytes back from Redis and nothing else; goal: load <= 2.0x that raw read.
This machine is shared and noisy: read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import io
import secrets
import statistics
import tempfile
import time

import _repo_path  # noqa: F401  (this checkout's packages, not the installed ones)
import grpc
import psycopg
import redis
from _deck_load import measure, verdict
from psycopg import sql

from control.catalog import decks
from control.config import Config
from control.projection import Publisher
from control.server import create_server
from fastpath import snapshot_format as fmt
from tollgate.v1 import common_pb2, rating_pb2, rating_pb2_grpc

PG = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/13"
PIECE = 256 * 1024


def deck_csv(rows: int) -> bytes:
    lines = ["prefix,description,connect_fee,rate_per_min,initial_increment,increment"]
    lines += [f"{10_000_000 + i * 7},Zone {i % 250},0.0{i % 10},0.{i % 97:04d},30,6" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def bare_copy(dsn: str, data: bytes) -> None:
    rows = list(decks.parse_rows(decks.ORIGINATION, io.StringIO(data.decode(), newline="")))
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE UNLOGGED TABLE IF NOT EXISTS bare (LIKE origination_rates INCLUDING DEFAULTS)")
        conn.execute("TRUNCATE bare")
        started = time.perf_counter()
        with conn.cursor().copy("COPY bare (rate_group_id, prefix, description, connect_fee, included_seconds,"
                                " rate_per_min, initial_increment, increment, priority) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(("bench", *row))
        bare_copy.seconds = time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    name = f"tollgate_bench_{secrets.token_hex(3)}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(PG, dbname=name)
    client = redis.Redis.from_url(REDIS)
    client.flushdb()
    running = create_server(Config(listen="127.0.0.1:0", metrics_listen="", dsn=dsn, redis_url=REDIS,
                                   admin_tokens=("bench",), plaintext=True))
    try:
        data = deck_csv(args.rows)
        print(f"deck: {args.rows:,} rows, {len(data) / 1e6:.1f} MB of CSV")
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = rating_pb2_grpc.RateGroupServiceStub(channel)
            meta = (("authorization", "Bearer bench"),)
            stub.CreateRateGroup(rating_pb2.CreateRateGroupRequest(rate_group_id="bench",
                                                                   rate_group=rating_pb2.RateGroup()), metadata=meta)
            pieces = [common_pb2.ImportRatesRequest(parent="rateGroups/bench", csv_data=data[:PIECE])]
            pieces += [common_pb2.ImportRatesRequest(csv_data=data[i : i + PIECE])
                       for i in range(PIECE, len(data), PIECE)]
            import_s, result = timed(lambda: stub.ImportOriginationRates(iter(pieces), metadata=meta, timeout=600))
        assert result.rows_in_deck == args.rows, result
        bare_copy(dsn, data)
        family = fmt.origination_deck("bench")
        publisher = Publisher(dsn, REDIS)
        publish_s, version = timed(lambda: publisher.publish(family))
        chunks = client.lrange(fmt.Keys().snapshot(family, version), 0, -1)
        raw_write_s, _ = timed(lambda: _raw_write(client, chunks))
        publisher.close()
        with tempfile.TemporaryDirectory() as images:
            loads, raws = measure(client, fmt.DEFAULT_NAMESPACE, family, version, "10000000", images)
        report = [
            ("import over gRPC (parse, check, COPY, commit)", import_s, "bare COPY of the same rows",
             bare_copy.seconds),
            ("publish deck to Redis (read PG, lay out, write)", publish_s, "raw RPUSH of the chunks", raw_write_s),
            ("reader loads the deck image (read, check, map)", statistics.median(loads), "raw LRANGE of the chunks",
             statistics.median(raws)),
        ]
        print(f"{'measure':50} {'seconds':>8}   {'baseline':28} {'seconds':>8} {'ratio':>7}")
        for label, seconds, base_label, base in report:
            print(f"{label:50} {seconds:8.2f}   {base_label:28} {base:8.2f} {seconds / base:6.1f}x")
        print(f"import throughput: {args.rows / import_s:,.0f} rows/s (goal: 1M rows in about a minute)")
        print(verdict(loads, raws))
    finally:
        running.stop(grace=0)
        client.flushdb()
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _raw_write(client: redis.Redis, chunks: list[bytes]) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.delete("bench:raw")
    for index, chunk in enumerate(chunks):
        pipe.rpush("bench:raw", chunk)
        if index % 20 == 19:
            pipe.execute()
    pipe.execute()


if __name__ == "__main__":
    main()
