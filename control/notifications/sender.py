"""The sender: a thread of the control service that mails the outbox (control/notifications/outbox.py).

A round takes up to BATCH due messages, leasing them (next_attempt_at moves LEASE_SECONDS ahead, committed) so
that another control service, or this one after a crash, leaves them alone meanwhile; builds each message;
sends them over one SMTP connection; then records each outcome. Sent: SENT. Refused for good (a 5xx answer to
the recipient or the message): FAILED, not tried again. Anything else - the server unreachable, TLS or login
failing, a 4xx answer, an error building the message - counts an attempt, keeps the error and tries again
after retry x 2^(attempts-1) seconds, at most retry_max: nothing is lost while the server is down, and it goes
out once it is back. A crash between the server taking a message and the row saying SENT sends it again later:
at least once, never silently dropped.

Its own thread rather than a job of the billing loop: an SMTP server that answers slowly must never hold up the
CDRs. A NOTIFY from each new message wakes it at once; otherwise it looks every `interval_seconds`.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from control.metrics import ControlMetrics
from control.notifications import compose, outbox

log = logging.getLogger("tollgate.notifications")

BATCH = 50
LEASE_SECONDS = 300
SECURITY = ("starttls", "tls", "none")
_MAX_ERROR = 500


@dataclass(frozen=True)
class MailSettings:
    host: str = ""
    port: int = 587
    security: str = "starttls"
    username: str = ""
    password: str = ""
    sender: str = ""
    ca_file: str = ""
    timeout_seconds: float = 30.0
    retry_seconds: float = 30.0
    retry_max_seconds: float = 1800.0
    interval_seconds: float = 5.0

    def check(self) -> None:
        """Refuse to start with settings that could never send (a SystemExit naming the key)."""
        if self.security not in SECURITY:
            raise SystemExit(f"smtp_security must be one of {', '.join(SECURITY)}, not {self.security!r}")
        if self.host and "@" not in self.sender:
            raise SystemExit("smtp_from (an e-mail address) is required with smtp_host")
        if self.password and not self.username:
            raise SystemExit("smtp_password needs smtp_username")


class Permanent(Exception):
    """The server refused this message for good."""


@dataclass
class Outcome:
    sent: bool = False
    permanent: bool = False
    error: str = ""


class Sender:
    def __init__(self, pool: ConnectionPool, dsn: str, settings: MailSettings, metrics: ControlMetrics | None = None):
        settings.check()
        self._pool = pool
        self._metrics = metrics
        self._dsn = dsn  # the LISTEN connection's (a pooled one cannot wait for notifications)
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        if not self.settings.host:
            log.info("no smtp_host configured: notifications wait in the outbox")
            return
        self._thread = threading.Thread(target=self._run, name="notifications", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=self.settings.timeout_seconds + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as listener:
                    listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(outbox.CHANNEL)))
                    while not self._stop.is_set():
                        if self.run_once() == BATCH:
                            continue  # more are due: no pause
                        list(listener.notifies(timeout=self.settings.interval_seconds, stop_after=1))
            except (psycopg.Error, OSError) as exc:  # PostgreSQL away: try again, say so once
                if not self._failing:
                    log.error("notifications cannot reach PostgreSQL (they wait in the outbox): %s", exc)
                self._failing = True
                self._stop.wait(self.settings.interval_seconds)
            except Exception:  # a bug must not end the thread: the outbox would fill without a word
                log.exception("a notification round failed; trying again")
                self._stop.wait(self.settings.interval_seconds)

    # ------------------------------------------------------------------ one round
    def run_once(self) -> int:
        """Send what is due; the number of messages tried."""
        rows = self._lease()
        if not rows:
            return 0
        messages, outcomes = self._build(rows)
        if messages:
            outcomes |= self._send(messages)
        self._record(rows, outcomes)
        self._count(outcomes.values())
        self._failing = False
        return len(rows)

    def _count(self, outcomes) -> None:
        if self._metrics:
            for outcome in outcomes:
                result = "sent" if outcome.sent else "failed" if outcome.permanent else "retry"
                self._metrics.mails.labels(result).inc()

    def _lease(self) -> list[dict]:
        with self._pool.connection() as conn, conn.transaction():
            return conn.execute(
                "UPDATE notifications SET next_attempt_at = now() + make_interval(secs => %s) WHERE id IN ("
                " SELECT id FROM notifications WHERE status = 'PENDING' AND next_attempt_at <= now()"
                " ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING *",
                (LEASE_SECONDS, BATCH)).fetchall()

    def _build(self, rows: list[dict]) -> tuple[dict[int, EmailMessage], dict[int, Outcome]]:
        messages, outcomes = {}, {}
        with self._pool.connection() as conn:
            for row in sorted(rows, key=lambda r: r["id"]):
                try:
                    with conn.transaction():
                        messages[row["id"]] = compose.message(conn, row, self.settings.sender)
                except Exception as exc:  # one bad message must not hold up the others
                    log.exception("cannot build notification %s", row["id"])
                    outcomes[row["id"]] = Outcome(error=f"building the message failed: {exc}")
        return messages, outcomes

    def _send(self, messages: dict[int, EmailMessage]) -> dict[int, Outcome]:
        try:
            client = self._connect()
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            error = f"{self.settings.host}:{self.settings.port}: {_describe(exc)}"
            if not self._failing:
                log.warning("cannot reach the SMTP server (notifications wait): %s", error)
            self._failing = True
            return {key: Outcome(error=error) for key in messages}
        outcomes = {}
        try:
            for key, mail in messages.items():
                outcomes[key] = _deliver(client, mail)
        finally:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()
        return outcomes

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        context = ssl.create_default_context(cafile=s.ca_file or None)
        if s.security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_seconds, context=context)
        else:
            client = smtplib.SMTP(s.host, s.port, timeout=s.timeout_seconds)
        try:
            client.ehlo()
            if s.security == "starttls":
                client.starttls(context=context)  # raises when the server does not offer it: never send in clear
                client.ehlo()
            if s.username:
                client.login(s.username, s.password)
        except BaseException:
            client.close()
            raise
        return client

    def _record(self, rows: list[dict], outcomes: dict[int, Outcome]) -> None:
        with self._pool.connection() as conn, conn.transaction():
            for row in rows:
                outcome = outcomes.get(row["id"], Outcome(error="not tried"))
                if outcome.sent:
                    conn.execute("UPDATE notifications SET status = 'SENT', attempts = attempts + 1, sent_at = now(),"
                                 " last_error = '' WHERE id = %s", (row["id"],))
                elif outcome.permanent:
                    conn.execute("UPDATE notifications SET status = 'FAILED', attempts = attempts + 1,"
                                 " last_error = %s WHERE id = %s", (outcome.error[:_MAX_ERROR], row["id"]))
                else:
                    conn.execute("UPDATE notifications SET attempts = attempts + 1, last_error = %s,"
                                 " next_attempt_at = %s WHERE id = %s",
                                 (outcome.error[:_MAX_ERROR], self._next_try(row["attempts"] + 1), row["id"]))

    def _next_try(self, attempts: int) -> datetime:
        delay = min(self.settings.retry_seconds * 2 ** min(attempts - 1, 30), self.settings.retry_max_seconds)
        return datetime.now(UTC) + timedelta(seconds=delay)


def _deliver(client: smtplib.SMTP, mail: EmailMessage) -> Outcome:
    try:
        refused = client.send_message(mail)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        return Outcome(permanent=all(500 <= c < 600 for c in codes), error=_describe(exc))
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
        return Outcome(permanent=500 <= exc.smtp_code < 600, error=_describe(exc))
    except (smtplib.SMTPException, OSError) as exc:
        return Outcome(error=_describe(exc))
    if refused:  # some recipients refused (there is one per message): as above
        return Outcome(permanent=True, error=str(refused))
    return Outcome(sent=True)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(f"{address}: {code} {text.decode(errors='replace') if isinstance(text, bytes) else text}"
                         for address, (code, text) in exc.recipients.items())
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        return f"{exc.smtp_code} {text}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}"
