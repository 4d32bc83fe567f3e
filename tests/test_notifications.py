"""E-mail notifications through the outbox (SPEC §2 `notifications`): written in the transaction of their event,
sent by the control service to a real SMTP server started here (aiosmtpd), tried again with backoff while it
is down, and listed by NotificationService and `tollgate-admin notifications list`.
"""

from __future__ import annotations

import email
import io
import socket
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path

import grpc
import psycopg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from google.protobuf.timestamp_pb2 import Timestamp
from pypdf import PdfReader

from control.access import tls
from tests.helpers import clean_env, failure, insert_cdrs, ok, run_cli, unique_email, unique_number
from tollgate.v1 import (
    account_pb2,
    auth_pb2,
    invoice_pb2,
    notification_pb2,
)

EUR = 1_000_000
PASSWORD = "notified-pass-1"
SENDER = "billing@tollgate.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """An aiosmtpd handler keeping what it receives; addresses in `refuse` are refused for good (550)."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        message["X-Test-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"

    def wait_for(self, match: Callable[[EmailMessage], bool], timeout: float = 15.0) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages:
                if match(message):
                    return message
            time.sleep(0.05)
        raise AssertionError(f"no such message within {timeout} s; got {[m['Subject'] for m in self.messages]}")

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]


class MailServer:
    """A real SMTP server on a fixed port, stopped and started again at will."""

    def __init__(self, **smtp_options) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        self._options = smtp_options
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **self._options)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture(scope="module")
def mail():
    server = MailServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(server_factory, connect, mail):
    """A control service of its own that mails through `mail` (plain SMTP on loopback) and retries fast."""
    started = server_factory(smtp_host="127.0.0.1", smtp_port=mail.port, smtp_security="none", smtp_from=SENDER,
                             notification_retry_seconds=0.3, notification_retry_max_seconds=1.0,
                             notification_interval_seconds=0.2)
    stubs = connect(started)
    return {"server": started, "stubs": stubs, "outbox": stubs.notifications}


def create(stubs, notifications: bool = True, **fields) -> account_pb2.Account:
    settings = fields.pop("settings", account_pb2.AccountSettings())
    settings.notifications = notifications
    account = account_pb2.Account(account_number=unique_number(), email=unique_email("mail"), password=PASSWORD,
                                  settings=settings, **fields)
    return stubs.accounts.CreateAccount(account_pb2.CreateAccountRequest(account=account), metadata=stubs.metadata)


def pay(stubs, account: account_pb2.Account, amount: int, note: str = "") -> account_pb2.Payment:
    return stubs.accounts.PostPayment(account_pb2.PostPaymentRequest(account=account.name, amount=amount, note=note),
                                      metadata=stubs.metadata)


def outbox(stack, filter_text: str = "") -> list[notification_pb2.Notification]:
    response = stack["outbox"].ListNotifications(notification_pb2.ListNotificationsRequest(
        filter=filter_text, page_size=1000), metadata=stack["stubs"].metadata)
    return list(response.notifications)


def attachments(message: EmailMessage) -> dict[str, bytes]:
    return {part.get_filename(): part.get_payload(decode=True) for part in message.iter_attachments()}


def pdf_text(data: bytes) -> str:
    return " ".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def test_a_new_account_is_welcomed_at_its_notification_address(stack, mail):
    stubs = stack["stubs"]
    account = create(stubs, profile=account_pb2.Profile(notification_email=unique_email("noc"), first_name="Ada"))
    message = mail.inbox.wait_for(lambda m: m["To"] == account.profile.notification_email)
    assert message["From"] == SENDER and account.account_number in message["Subject"]
    body = message.get_body(("plain",)).get_content()
    assert account.account_number in body and account.email in body and PASSWORD not in body
    (row,) = outbox(stack, f"account = {account.account_number}")
    assert (row.kind, row.recipient) == (row.ACCOUNT_CREATED, account.profile.notification_email)
    wait_state(stack, row.name, notification_pb2.Notification.SENT)


def wait_state(stack, name: str, state: int, timeout: float = 15.0) -> notification_pb2.Notification:
    deadline = time.monotonic() + timeout
    while True:
        (row,) = [n for n in outbox(stack) if n.name == name]
        if row.state == state or time.monotonic() > deadline:
            assert row.state == state, row
            return row
        time.sleep(0.1)


def test_accounts_without_notifications_get_no_mail_and_no_outbox_row(stack, mail):
    stubs = stack["stubs"]
    quiet = create(stubs, notifications=False)
    pay(stubs, quiet, 5 * EUR)
    loud = create(stubs)  # written after the quiet one's: once it is sent, the quiet one would have been
    mail.inbox.wait_for(lambda m: m["To"] == loud.email)
    assert mail.inbox.to(quiet.email) == [] and outbox(stack, f"account = {quiet.account_number}") == []


def test_a_receipt_arrives_with_its_pdf(stack, mail):
    stubs = stack["stubs"]
    account = create(stubs)
    payment = pay(stubs, account, 25 * EUR, "bank ref 4711")
    number = payment.receipt.removeprefix("receipts/")
    message = mail.inbox.wait_for(lambda m: m["To"] == account.email and number in m["Subject"])
    files = attachments(message)
    assert list(files) == [f"{number}.pdf"]
    text = pdf_text(files[f"{number}.pdf"])
    assert number in text and "bank ref 4711" in text and "25.00" in text
    assert "25.00" in message.get_body(("plain",)).get_content()


def test_an_issued_invoice_arrives_with_its_pdf_and_csv_detail(stack, mail):
    stubs = stack["stubs"]
    account = create(stubs, billing=account_pb2.Billing(account_type=account_pb2.POSTPAID,
                                                        invoice_with_cdr=account_pb2.INVOICE_WITH_CDR_CSV))
    with psycopg.connect(stack["server"].dsn) as conn:
        conn.execute("UPDATE accounts SET created_at = '2031-01-05' WHERE account_number = %s",
                     (account.account_number,))
    start = datetime(2031, 1, 10, tzinfo=UTC)
    insert_cdrs(stack["server"].dsn, [dict(call_id=f"c{i}", account_number=account.account_number,
                                           direction="outbound", setup_time=start, billable_seconds=60,
                                           sip_code=200, customer_cost=1_250_000) for i in range(3)])
    as_of = Timestamp()
    as_of.FromDatetime(datetime(2031, 2, 1, 1, tzinfo=UTC))
    (invoice,) = stubs.invoices.GenerateInvoices(invoice_pb2.GenerateInvoicesRequest(
        as_of=as_of, account=account.name), metadata=stubs.metadata).invoices
    message = mail.inbox.wait_for(lambda m: m["To"] == account.email and invoice.number in m["Subject"])
    files = attachments(message)
    assert sorted(files) == [f"{invoice.number}-cdrs.csv", f"{invoice.number}.pdf"]
    assert invoice.number in pdf_text(files[f"{invoice.number}.pdf"])
    assert files[f"{invoice.number}-cdrs.csv"].decode().count("\n") == 4  # a header and three calls
    body = message.get_body(("plain",)).get_content()
    assert "3.75" in body and str(invoice.due_date.year) in body


def test_low_balance_is_told_once_per_crossing(stack, mail):
    stubs = stack["stubs"]
    account = create(stubs, billing=account_pb2.Billing(low_balance_threshold=5 * EUR))
    pay(stubs, account, 10 * EUR)
    pay(stubs, account, -6 * EUR)  # 4.00 left: below 5.00
    pay(stubs, account, -1 * EUR)  # still below: no second message
    dsn = stack["server"].dsn
    with psycopg.connect(dsn) as conn:  # a call's debit, as the ledger books it (control/billing/ledger.py)
        conn.execute("UPDATE accounts SET balance = balance + %s WHERE account_number = %s",
                     (-500_000, account.account_number))
    first = mail.inbox.wait_for(lambda m: m["To"] == account.email and "low balance" in m["Subject"].lower())
    assert "3.00" not in first.get_body(("plain",)).get_content()  # it says the balance at the crossing: 4.00
    assert "4.00" in first.get_body(("plain",)).get_content()
    pay(stubs, account, 20 * EUR)  # back above: the alert is armed again
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE accounts SET balance = balance + %s WHERE account_number = %s",
                     (-20 * EUR, account.account_number))
    rows = outbox(stack, f"account = {account.account_number} AND kind = LOW_BALANCE")
    assert len(rows) == 2
    for row in rows:
        wait_state(stack, row.name, notification_pb2.Notification.SENT)
    assert len([m for m in mail.inbox.to(account.email) if "low balance" in m["Subject"].lower()]) == 2


def test_nothing_is_lost_while_the_mail_server_is_down(stack, mail, cli_for):
    stubs = stack["stubs"]
    mail.stop()
    try:
        account = create(stubs)
        payment = pay(stubs, account, 3 * EUR)
        rows = outbox(stack, f"account = {account.account_number}")
        assert len(rows) == 2
        deadline = time.monotonic() + 15
        while any(r.attempts < 2 for r in rows) and time.monotonic() < deadline:
            time.sleep(0.2)
            rows = outbox(stack, f"account = {account.account_number}")
        assert all(r.state == r.PENDING and r.attempts >= 2 and r.last_error for r in rows), rows
        listed = ok(cli_for(stack)("notifications", "list", "--account", account.account_number))
        assert "PENDING" in listed and "RECEIPT" in listed and "refused" in listed.lower()
    finally:
        mail.start()
    number = payment.receipt.removeprefix("receipts/")
    mail.inbox.wait_for(lambda m: m["To"] == account.email and number in m["Subject"])
    mail.inbox.wait_for(lambda m: m["To"] == account.email and account.account_number in m["Subject"])
    for row in rows:
        sent = wait_state(stack, row.name, notification_pb2.Notification.SENT)
        assert sent.HasField("send_time")
    assert len(mail.inbox.to(account.email)) == 2  # each once


def test_a_recipient_refused_for_good_is_failed_not_retried(stack, mail):
    address = unique_email("gone")
    mail.inbox.refuse.add(address)
    account = create(stack["stubs"], profile=account_pb2.Profile(notification_email=address))
    (row,) = outbox(stack, f"account = {account.account_number}")
    failed = wait_state(stack, row.name, notification_pb2.Notification.FAILED)
    assert failed.attempts == 1 and "550" in failed.last_error


def test_listing_needs_an_operator_and_filters(stack):
    stubs = stack["stubs"]
    account = create(stubs)
    token = stubs.auth.Login(auth_pb2.LoginRequest(login=account.email, password=PASSWORD)).token
    denied = failure(lambda: stack["outbox"].ListNotifications(
        notification_pb2.ListNotificationsRequest(), metadata=(("authorization", f"Bearer {token}"),)))
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    assert all(n.kind == n.RECEIPT for n in outbox(stack, "kind = RECEIPT"))
    bad = failure(lambda: outbox(stack, "state = LOST"))
    assert (bad.code, bad.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["filter"])
    page = stack["outbox"].ListNotifications(notification_pb2.ListNotificationsRequest(page_size=1),
                                             metadata=stubs.metadata)
    following = stack["outbox"].ListNotifications(notification_pb2.ListNotificationsRequest(
        page_size=1, page_token=page.next_page_token), metadata=stubs.metadata)
    assert int(following.notifications[0].name.split("/")[1]) < int(page.notifications[0].name.split("/")[1])


@pytest.fixture
def cli_for(tmp_path: Path):
    def for_stack(stack) -> Callable[..., object]:
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        env = clean_env(home) | {"TOLLGATE_ADDRESS": stack["server"].address,
                                 "TOLLGATE_TOKEN": stack["server"].admin_token}
        return lambda *args: run_cli(list(args), env)

    return for_stack


def test_starttls_and_auth(server_factory, connect, tmp_path: Path):
    """The usual submission setup: STARTTLS required by the server, then AUTH; the certificate checked against
    smtp_ca_file."""
    tls.ensure_pki(tmp_path / "pki")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "pki" / "server.pem", tmp_path / "pki" / "server.key")

    def authenticate(server, session, envelope, mechanism, data):
        good = isinstance(data, LoginPassword) and (data.login, data.password) == (b"mailer", b"s3cret-pass")
        return AuthResult(success=good)

    mail = MailServer(tls_context=context, require_starttls=True, authenticator=authenticate, auth_required=True)
    mail.start()
    try:
        started = server_factory(smtp_host="127.0.0.1", smtp_port=mail.port, smtp_security="starttls",
                                 smtp_ca_file=str(tmp_path / "pki" / "ca.pem"), smtp_username="mailer",
                                 smtp_password="s3cret-pass", smtp_from=SENDER, notification_interval_seconds=0.2)
        account = create(connect(started))
        mail.inbox.wait_for(lambda m: m["To"] == account.email)
    finally:
        mail.stop()
