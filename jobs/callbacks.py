"""Completion callbacks: when a job with a callback_url finishes, its document is POSTed there,
signed with its owner's secret, at least once.

- A delivery row is written for every finish (Job.move sends `job_finished`); the sweep (beat,
  every LMWEB_RECOVER_SECONDS) writes any that a crash left out and sends again any pending one
  whose message was lost. A row is `delivered` only after a 2xx answer, so a receiver may see a
  callback twice (its `X-Lmweb-Delivery` id says so), never zero times while attempts remain.
- Signature: `X-Lmweb-Signature: sha256=<hex HMAC-SHA256 of "<X-Lmweb-Timestamp>.<body>">` with
  the owner's secret (GET /api/v1/callback-secret/).
- Only public addresses: the host is resolved before every attempt and refused if any address
  is private, loopback, link-local, multicast or reserved (LMWEB_CALLBACK_ALLOW_PRIVATE lifts
  it); redirects are not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from datetime import timedelta
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

import lmweb

from . import dispatch
from .models import FINISHED_STATES, CallbackDelivery, CallbackSecret, Job, job_finished

log = logging.getLogger(__name__)

Status = CallbackDelivery.Status
MAX_BACKOFF_SECONDS = 3600
# A pending delivery not attempted this long after it was due has lost its message.
LOST_AFTER_SECONDS = 30


class Refused(Exception):
    """The URL is not one lmweb calls."""


class NotFinished(Exception):
    """A callback asked for again for a job that has not finished (or has no callback_url)."""


class Unresolved(Exception):
    """The host name does not resolve now (tried again later)."""


# -- the URL -------------------------------------------------------------------------------------


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def check_url(url: str, *, resolve: bool = True) -> None:
    """Refused unless `url` is http(s) to a host whose every address is public (or private ones
    are allowed). A name that does not resolve is refused only when `resolve` says the name must
    resolve now (before sending), not at submission (a DNS outage is not the caller's fault)."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise Refused("an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise Refused("no credentials in the URL: the signature authenticates lmweb")
    if settings.CALLBACK_ALLOW_PRIVATE:
        return
    host = parts.hostname
    try:
        addresses = [ipaddress.ip_address(host).compressed]
    except ValueError:
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            addresses = [info[4][0] for info in socket.getaddrinfo(host, port)]
        except (OSError, ValueError):
            if resolve:
                raise Unresolved(f"{host} does not resolve") from None
            return
    if any(_private(address) for address in addresses):
        raise Refused(
            f"{host} is a private, loopback or link-local address: lmweb calls only public ones"
        )


# -- secrets -------------------------------------------------------------------------------------


def secret_for(user: AbstractBaseUser) -> str:
    record, _ = CallbackSecret.objects.get_or_create(
        user=user, defaults={"secret": secrets.token_hex(32)}
    )
    return record.secret


def rotate_secret(user: AbstractBaseUser) -> str:
    secret = secrets.token_hex(32)
    CallbackSecret.objects.update_or_create(
        user=user, defaults={"secret": secret, "created": timezone.now()}
    )
    return secret


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


# -- scheduling ----------------------------------------------------------------------------------


def _dispatch_on_commit(delivery: CallbackDelivery, countdown: float = 0) -> None:
    transaction.on_commit(lambda: _publish(delivery.id, countdown))


def _publish(delivery_id, countdown: float = 0) -> None:
    try:
        dispatch.send_callback(delivery_id, countdown)
    except Exception:  # the broker is down: the sweep sends it when it is back
        log.warning("callback %s: not published now; the sweep will", delivery_id, exc_info=True)


def schedule(job: Job, reason: str = "finished") -> CallbackDelivery | None:
    """A delivery of the job's finish (one per finish) or, for `resend`, another one."""
    if not job.callback_url or job.state not in FINISHED_STATES or job.finished_at is None:
        return None
    try:
        with transaction.atomic():
            delivery = CallbackDelivery.objects.create(
                job=job,
                reason=reason,
                job_state=job.state,
                job_finished_at=job.finished_at,
                url=job.callback_url,
            )
            _dispatch_on_commit(delivery)
    except IntegrityError:  # this finish has its delivery already (the sweep and the signal)
        return None
    return delivery


def _on_job_finished(sender, pk, state, **kwargs) -> None:
    job = Job.objects.filter(pk=pk).exclude(callback_url="").first()
    if job is not None:
        schedule(job)


job_finished.connect(_on_job_finished, dispatch_uid="lmweb-callbacks")


def resend(job: Job) -> CallbackDelivery:
    """Send the job's callback again (its URL as it is now)."""
    delivery = schedule(job, reason="resend")
    if delivery is None:
        raise NotFinished(
            "the job has no callback_url" if not job.callback_url else "the job has not finished"
        )
    return delivery


def sweep() -> dict[str, int]:
    """Deliveries a crash left out (jobs finished in the last day with a callback_url and none
    for this finish), and pending ones whose message is overdue: published again."""
    counts = {"created": 0, "resent": 0}
    delivered = CallbackDelivery.objects.filter(
        job=OuterRef("pk"), reason="finished", job_finished_at=OuterRef("finished_at")
    )
    missing = (
        Job.objects.filter(
            state__in=FINISHED_STATES,
            finished_at__gte=timezone.now() - timedelta(days=1),
        )
        .exclude(callback_url="")
        .filter(~Exists(delivered))
    )
    for job in missing[:500]:
        if schedule(job) is not None:
            counts["created"] += 1
    overdue = timezone.now() - timedelta(seconds=LOST_AFTER_SECONDS)
    for delivery_id in CallbackDelivery.objects.filter(
        status=Status.PENDING, next_attempt_at__lt=overdue
    ).values_list("id", flat=True)[:500]:
        _publish(delivery_id)
        counts["resent"] += 1
    return counts


# -- delivery ------------------------------------------------------------------------------------


def document(delivery: CallbackDelivery) -> dict:
    job = delivery.job
    return {
        "event": "job.finished",
        "delivery": str(delivery.id),
        "reason": delivery.reason,
        "job": {
            "id": str(job.id),
            "workflow": job.workflow,
            "name": job.name,
            "state": delivery.job_state,
            "submitted_at": job.submitted_at.isoformat(),
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            "error": {"code": job.error_code, "message": job.error_message}
            if job.error_code
            else None,
            "tags": job.tags,
        },
        "lmweb": lmweb.__version__,
    }


def _backoff(attempts: int) -> float:
    return min(MAX_BACKOFF_SECONDS, settings.CALLBACK_RETRY_SECONDS * 2 ** (attempts - 1))


def deliver(delivery_id) -> str:
    """One attempt, under a row lock (two workers never send one delivery at once). Returns the
    delivery's status after it."""
    with transaction.atomic():
        delivery = (
            CallbackDelivery.objects.select_for_update(skip_locked=True)
            .select_related("job", "job__owner")
            .filter(pk=delivery_id, status=Status.PENDING)
            .first()
        )
        if delivery is None:
            return "gone"
        body = json.dumps(document(delivery), sort_keys=True).encode()
        timestamp = str(int(time.time()))
        delivery.attempts += 1
        status_code, error = None, ""
        try:
            check_url(delivery.url)
            response = requests.post(
                delivery.url,
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": f"lmweb/{lmweb.__version__}",
                    "X-Lmweb-Event": "job.finished",
                    "X-Lmweb-Delivery": str(delivery.id),
                    "X-Lmweb-Timestamp": timestamp,
                    "X-Lmweb-Signature": signature(secret_for(delivery.job.owner), timestamp, body),
                },
                timeout=settings.CALLBACK_TIMEOUT_SECONDS,
                allow_redirects=False,
            )
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}: {response.text[:500]}"
        except Refused as exc:
            error = f"refused: {exc}"
        except (Unresolved, requests.RequestException) as exc:
            error = f"{type(exc).__name__}: {str(exc)[:500]}"
        delivery.last_status_code = status_code
        delivery.last_error = error
        now = timezone.now()
        if not error:
            delivery.status, delivery.delivered_at = Status.DELIVERED, now
        elif error.startswith("refused") or delivery.attempts >= settings.CALLBACK_ATTEMPTS:
            delivery.status = Status.FAILED
        else:
            wait = _backoff(delivery.attempts)
            delivery.next_attempt_at = now + timedelta(seconds=wait)
            _dispatch_on_commit(delivery, countdown=wait)
        delivery.save()
    log.info(
        "callback %s for job %s: %s after %d attempt(s)%s",
        delivery.id,
        delivery.job_id,
        delivery.status,
        delivery.attempts,
        f" ({error})" if error else "",
    )
    return delivery.status
