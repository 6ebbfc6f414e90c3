"""A Python client of Agora, generated from the same protos as the server
(bash scripts/generate-clients.sh writes ./gen next to this file).

It books and cancels a reservation while watching the booker's notifications
(server stream), then uploads a file in two versions (client stream) and
downloads them again (server stream), checking every byte by SHA-256.

    PYTHONPATH=.tools/python python3 examples/python/agora_example.py \
        --server http://localhost:8080 --admin-password '...'

Settings: --server (AGORA_SERVER, default http://localhost:8080), --admin
(AGORA_ADMIN_USERNAME, default admin), --admin-password (AGORA_ADMIN_PASSWORD).
An administrator creates the bookable room; everything else is done by two
ordinary users registered on the way. Every step prints one "ok" line; the
first unexpected result prints "FAILED: ..." and exits 1.
"""

import argparse
import collections
import datetime
import hashlib
import os
import queue
import secrets
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from google.protobuf import timestamp_pb2  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

from agora.files.v1 import files_pb2, files_pb2_grpc  # noqa: E402
from agora.identity.v1 import identity_pb2, identity_pb2_grpc  # noqa: E402
from agora.reservation.v1 import reservation_pb2, reservation_pb2_grpc  # noqa: E402

CHUNK = 1024 * 1024  # the most one UploadRequest chunk may carry
TIMEOUT = 15  # seconds, for every unary call and every wait


class Failure(Exception):
    pass


def ok(text):
    print(f"ok  {text}", flush=True)


def expect(condition, text):
    if not condition:
        raise Failure(text)


def expect_code(call, code, what):
    """Runs `call`, which must fail with `code`; returns the grpc.RpcError."""
    try:
        call()
    except grpc.RpcError as err:
        expect(err.code() == code, f"{what}: expected {code.name}, got {err.code().name}: {err.details()}")
        return err
    raise Failure(f"{what}: expected {code.name}, but the call succeeded")


def error_info(err):
    """The google.rpc.ErrorInfo among an error's details (grpcio-status decodes grpc-status-details-bin)."""
    status = rpc_status.from_call(err)
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    return None


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class Bearer(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Sends `authorization: Bearer <token>` with every call, and a unary call's request_id as the
    idempotency-key header: the gateway re-sends a hung or failed write only when the call carries it."""

    def __init__(self, token):
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, d, extra=()):
        metadata = list(d.metadata or []) + [self._header, *extra]
        return _CallDetails(d.method, d.timeout, metadata, d.credentials, d.wait_for_ready, d.compression)

    def intercept_unary_unary(self, continuation, details, request):
        key = getattr(request, "request_id", "")
        return continuation(self._with_token(details, [("idempotency-key", key)] if key else []), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._with_token(details), requests)


class User:
    """The generated stubs of one signed-in user."""

    def __init__(self, channel, name, login):
        self.name = name
        self.id = login.user.id
        authed = grpc.intercept_channel(channel, Bearer(login.tokens.access_token))
        self.reservations = reservation_pb2_grpc.ReservationServiceStub(authed)
        self.files = files_pb2_grpc.FileServiceStub(authed)


def sign_in(channel, username, password, register=False):
    identity = identity_pb2_grpc.IdentityServiceStub(channel)
    step = f"register {username}"
    try:
        if register:
            identity.Register(
                identity_pb2.RegisterRequest(username=username, password=password, display_name=username, email=f"{username}@example.com"),
                timeout=TIMEOUT,
            )
        step = f"login as {username}"
        login = identity.Login(identity_pb2.LoginRequest(username=username, password=password), timeout=TIMEOUT)
    except grpc.RpcError as err:
        raise Failure(f"{step}: {err.code().name}: {err.details()}") from None
    return User(channel, username, login)


def timestamp(dt):
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt)
    return ts


class Watch:
    """A WatchNotifications stream read by a background thread."""

    def __init__(self, user, after_cursor):
        self.call = user.reservations.WatchNotifications(reservation_pb2.WatchNotificationsRequest(after_cursor=after_cursor))
        self.items = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for response in self.call:
                if response.HasField("notification"):
                    self.items.put(response.notification)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                self.items.put(err)

    def next(self, what):
        try:
            item = self.items.get(timeout=TIMEOUT)
        except queue.Empty:
            raise Failure(f"WatchNotifications: no notification within {TIMEOUT}s while waiting for {what}") from None
        if isinstance(item, grpc.RpcError):
            raise Failure(f"WatchNotifications ended with {item.code().name}: {item.details()}")
        return item

    def close(self):
        self.call.cancel()
        self.thread.join(TIMEOUT)


def reservations(admin, ana, ben, suffix):
    R = reservation_pb2
    resource = admin.reservations.CreateResource(
        R.CreateResourceRequest(
            resource=R.Resource(name=f"Python example room {suffix}", type="room", capacity=6, location="2nd floor", active=True),
            request_id=f"py-example-room-{suffix}",
        ),
        timeout=TIMEOUT,
    ).resource
    ok(f"reservation: {admin.name} created the room {resource.name!r} (30-minute slots)")

    # A slot a week ahead, on the grid, far from the 24-hour reminders.
    day = datetime.datetime.now(datetime.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    start = day + datetime.timedelta(days=8, hours=10)
    end = start + datetime.timedelta(hours=1)
    available, token = [], ""
    while True:
        page = ana.reservations.ListAvailableResources(
            R.ListAvailableResourcesRequest(type="room", party_size=4, start_time=timestamp(start), end_time=timestamp(end), page_token=token),
            timeout=TIMEOUT,
        )
        available += [r.id for r in page.resources]
        token = page.next_page_token
        if not token:
            break
    expect(resource.id in available, "the new room is not listed as available")
    ok(f"reservation: the room is free on {start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC for 4 people")

    booking = ana.reservations.CreateReservation(
        R.CreateReservationRequest(
            resource_id=resource.id, start_time=timestamp(start), end_time=timestamp(end), party_size=4,
            notes="python example", request_id=f"py-example-booking-{suffix}",
        ),
        timeout=TIMEOUT,
    ).reservation
    expect(booking.status == R.RESERVATION_STATUS_CONFIRMED, f"the booking is {R.ReservationStatus.Name(booking.status)}")
    ok(f"reservation: {ana.name} booked it ({booking.id}, CONFIRMED)")

    # The notifications so far, newest first; the stream resumes after the newest one, so
    # nothing stored from here on can be missed, whenever the stream actually gets going.
    stored = ana.reservations.ListNotifications(R.ListNotificationsRequest(), timeout=TIMEOUT).notifications
    expect(
        len(stored) > 0 and stored[0].type == R.NOTIFICATION_TYPE_CONFIRMED and stored[0].reservation_id == booking.id,
        f"ListNotifications did not start with the CONFIRMED notification: {list(stored)}",
    )
    ok(f"reservation: {ana.name} has the CONFIRMED notification; watching for more after cursor {stored[0].cursor}")
    watch = Watch(ana, stored[0].cursor)
    try:
        # Someone else wants the same slot: refused, with the conflicting slot in the error details.
        err = expect_code(
            lambda: ben.reservations.CreateReservation(
                R.CreateReservationRequest(
                    resource_id=resource.id, start_time=timestamp(start), end_time=timestamp(end), party_size=2,
                    request_id=f"py-example-booking-ben-{suffix}",
                ),
                timeout=TIMEOUT,
            ),
            grpc.StatusCode.ALREADY_EXISTS,
            "booking a taken slot",
        )
        info = error_info(err)
        expect(info is not None and "conflict_start" in info.metadata, f"no ErrorInfo with conflict_start in {err.details()!r}")
        conflict = datetime.datetime.fromisoformat(info.metadata["conflict_start"].replace("Z", "+00:00"))
        expect(conflict == start, f"conflict_start is {conflict}, expected {start}")
        ok(f"reservation: {ben.name} could not book the same slot (ALREADY_EXISTS; ErrorInfo conflict_start {info.metadata['conflict_start']})")

        cancelled = ana.reservations.CancelReservation(R.CancelReservationRequest(id=booking.id, reason="plans changed"), timeout=TIMEOUT).reservation
        expect(cancelled.status == R.RESERVATION_STATUS_CANCELLED, f"after CancelReservation the status is {R.ReservationStatus.Name(cancelled.status)}")
        ok(f"reservation: {ana.name} cancelled the booking")

        note = watch.next("the CANCELLED notification")
        expect(
            note.type == R.NOTIFICATION_TYPE_CANCELLED and note.reservation_id == booking.id,
            f"expected CANCELLED for {booking.id}, got {R.NotificationType.Name(note.type)} for {note.reservation_id}",
        )
        ok(f"reservation: WatchNotifications delivered CANCELLED to {ana.name}: {note.message!r}")
    finally:
        watch.close()

    told = ben.reservations.ListNotifications(R.ListNotificationsRequest(unread_only=True), timeout=TIMEOUT).notifications
    expect(
        any(n.type == R.NOTIFICATION_TYPE_RESOURCE_AVAILABLE and n.resource_id == resource.id for n in told),
        f"{ben.name} was not told the slot is free again: {list(told)}",
    )
    ok(f"reservation: {ben.name} was told the slot is free again (RESOURCE_AVAILABLE)")


def upload(user, metadata, content):
    def requests():
        yield files_pb2.UploadRequest(metadata=metadata)
        for i in range(0, len(content), CHUNK):
            yield files_pb2.UploadRequest(chunk=content[i : i + CHUNK])

    return user.files.Upload(requests(), timeout=60)


def download(user, file_id, version=0, offset=0):
    """The (FileVersion, bytes) of a Download stream."""
    meta, data = None, bytearray()
    for part in user.files.Download(files_pb2.DownloadRequest(file_id=file_id, version=version, offset=offset), timeout=60):
        if part.HasField("version"):
            meta = part.version
        else:
            data += part.chunk
    expect(meta is not None, "Download sent no FileVersion")
    return meta, bytes(data)


def files(user, suffix):
    F = files_pb2
    path = f"python-example/{suffix}/data.bin"
    first = os.urandom(2 * CHUNK + CHUNK // 2)
    first_sha = hashlib.sha256(first).hexdigest()
    made = upload(user, F.UploadMetadata(path=path, base_version=0, comment="first version"), first)
    expect(
        made.version.version == 1 and made.version.size == len(first) and made.version.sha256 == first_sha,
        f"Upload returned version {made.version.version}, {made.version.size} bytes, sha256 {made.version.sha256}",
    )
    file_id = made.file.id
    ok(f"files: uploaded {path} version 1 ({len(first)} bytes in 3 chunks), sha256 {first_sha[:16]}... matches")

    meta, data = download(user, file_id)
    expect(meta.version == 1 and meta.sha256 == first_sha, f"Download announced version {meta.version}, sha256 {meta.sha256}")
    expect(hashlib.sha256(data).hexdigest() == first_sha and data == first, "the downloaded bytes differ from the uploaded ones")
    ok("files: downloaded version 1, sha256 verified")

    second = b"version two, written by examples/python\n" * 1000
    second_sha = hashlib.sha256(second).hexdigest()
    v2 = upload(user, F.UploadMetadata(file_id=file_id, base_version=1, comment="second version", expected_sha256=second_sha), second)
    expect(v2.version.version == 2 and v2.version.sha256 == second_sha, f"the second upload made version {v2.version.version}")
    expect_code(
        lambda: upload(user, F.UploadMetadata(file_id=file_id, base_version=1, comment="stale"), b"lost update"),
        grpc.StatusCode.ABORTED,
        "an upload based on a stale version",
    )
    ok("files: uploaded version 2 on top of version 1; an upload still based on version 1 was refused (ABORTED)")

    versions = user.files.ListVersions(F.ListVersionsRequest(file_id=file_id), timeout=TIMEOUT).versions
    expect([v.version for v in versions] == [2, 1], f"ListVersions gave {[v.version for v in versions]}")
    meta, data = download(user, file_id)
    expect(meta.version == 2 and hashlib.sha256(data).hexdigest() == second_sha, "the latest download is not version 2")
    meta, data = download(user, file_id, version=1, offset=CHUNK)
    expect(meta.version == 1 and data == first[CHUNK:], "version 1 resumed at 1 MiB does not match")
    ok("files: versions [2, 1]; latest download is version 2, version 1 resumed at 1 MiB matches, sha256 verified")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("AGORA_SERVER", "http://localhost:8080"))
    parser.add_argument("--admin", default=os.environ.get("AGORA_ADMIN_USERNAME", "admin"))
    parser.add_argument("--admin-password", default=os.environ.get("AGORA_ADMIN_PASSWORD", ""))
    args = parser.parse_args()
    if not args.admin_password:
        print("FAILED: an administrator's password is needed: --admin-password or AGORA_ADMIN_PASSWORD", file=sys.stderr)
        return 1

    target = args.server.split("://", 1)[-1].rstrip("/")
    if args.server.startswith("https://"):
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials())
    else:
        channel = grpc.insecure_channel(target)
    suffix = secrets.token_hex(4)
    try:
        with channel:
            admin = sign_in(channel, args.admin, args.admin_password)
            ok(f"identity: signed in as {admin.name} at {args.server}")
            ana = sign_in(channel, f"ana-{suffix}", f"ana's long passphrase {suffix}", register=True)
            ben = sign_in(channel, f"ben-{suffix}", f"ben's long passphrase {suffix}", register=True)
            ok(f"identity: registered and signed in {ana.name} and {ben.name}")
            reservations(admin, ana, ben, suffix)
            files(ana, suffix)
    except Failure as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    except grpc.RpcError as err:
        print(f"FAILED: unexpected {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    print("python example: all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
