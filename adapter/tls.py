"""Serving TLS for the custom metrics API, as k8s.io/apiserver serves it.

The adapter's start-up (issue 3) calls `self_signed_pair` when no certificate is configured (the
`--cert-dir` default of k8s.io/apiserver), builds one `ServerTls` from the files, runs
`watch_files` beside the server and hands `uvicorn_config(app, tls, ...)` to `uvicorn.Server`.
The API layer reads who the TLS peer is with `client_certificate(scope)` and passes it to
`adapter.auth.Authenticator`.

What this module owns:

* Rotation without restarts. Every reload builds a fresh `SSLContext` from the files; the
  listening context's `sni_callback` (OpenSSL calls it on every ClientHello, with or without a
  server name) moves each new handshake onto the newest context. Open connections keep the
  context they started with. A file that does not load (half-written, key not matching) leaves
  the previous context in place and logs a warning; it never raises out of `reload_if_changed`.
* Client certificates. The context asks for one (`CERT_OPTIONAL`) and verifies it against the
  client CAs it is given (the front-proxy CA, the cluster's client CA), so bearer-token clients
  without a certificate still connect. Python's `ssl` cannot ask without verifying: a
  certificate signed by none of them fails the handshake and the connection is closed (with
  TLS 1.2 the client's connect fails; with TLS 1.3 its side of the handshake is over before the
  server checks, so its first read fails). That is our answer to a wrong CA: no request from
  such a client reaches the app. OpenSSL verifies against the union of the CAs; which of them
  issued the certificate is found afterwards (`ServerTls.issuers`: the issuer's name and
  signature, so the leaf must be signed by a CA certificate itself, not an intermediate), and
  travels in the scope beside the certificate: the front proxy's word must never be taken
  from a certificate of the other CA.
* The peer certificate in the ASGI scope. uvicorn does not pass it on, so `TlsHttpToolsProtocol`
  (and `TlsH11Protocol`) read it once per connection and add the ASGI TLS extension
  (https://asgi.readthedocs.io/en/latest/specs/tls.html) to every request's scope, and the
  issuers under `ISSUERS_EXTENSION`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

import uvicorn
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from adapter.auth import ClientCert

log = logging.getLogger(__name__)

CERT_NAME = "apiserver.crt"
KEY_NAME = "apiserver.key"
_ALWAYS_HOSTS = ("localhost", "127.0.0.1")
# k8s.io/client-go/util/cert GenerateSelfSignedCertKeyWithFixtures: valid from an hour ago (clock
# skew), for one year.
_BACKDATE = timedelta(hours=1)
_LIFETIME = timedelta(days=365)

_TLS_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


# -- the self-signed pair ------------------------------------------------------------------------


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host.lower())


def _reusable(
    cert_file: Path, key_file: Path, wanted: set[x509.GeneralName], now: datetime
) -> bool:
    """A pair from an earlier start: readable, matching, valid now and naming every host."""
    try:
        cert = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, IndexError, x509.ExtensionNotFound):
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return (
        key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)
        and cert.not_valid_before_utc <= now < cert.not_valid_after_utc
        and wanted <= set(names)
    )


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write beside the target and rename, so a watcher never reads half a file."""
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(partial, mode)  # O_CREAT's mode does not apply to a file left from a crash
    os.replace(partial, path)


def self_signed_pair(
    cert_dir: Path, hosts: Sequence[str], *, clock: Callable[[], float] = time.time
) -> tuple[Path, Path]:
    """`apiserver.crt` and `apiserver.key` in `cert_dir`, made once and reused while valid.

    As k8s.io/apiserver's `MaybeDefaultWithSelfSignedCerts`: a throw-away CA signs the serving
    certificate and the certificate file holds both (serving first), so clients can trust the
    CA part. ECDSA P-256 rather than RSA 2048: the same clients accept it and it is made in a
    millisecond. The SANs are `hosts` (e.g. the Service's in-cluster names) plus `localhost`
    and `127.0.0.1`.
    """
    cert_file, key_file = cert_dir / CERT_NAME, cert_dir / KEY_NAME
    names = list(dict.fromkeys([*hosts, *_ALWAYS_HOSTS]))
    wanted = {_san(host) for host in names}
    now = datetime.fromtimestamp(clock(), tz=UTC)
    if _reusable(cert_file, key_file, wanted, now):
        return cert_file, key_file

    stamp = int(now.timestamp())
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{names[0]}-ca@{stamp}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now - _BACKDATE + _LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{names[0]}@{stamp}")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now - _BACKDATE + _LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_san(host) for host in names]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_dir.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    _write_private(
        key_file,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        0o600,
    )
    _write_private(cert_file, cert.public_bytes(pem) + ca.public_bytes(pem), 0o644)
    log.info("generated a self-signed serving certificate in %s for %s", cert_dir, names)
    return cert_file, key_file


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


# -- the serving context and its reload ----------------------------------------------------------


class ServerTls:
    """The serving certificate, key and front-proxy client CA, reloaded when their files change.

    `context` is what the server listens with, for its whole life; `reload_if_changed` builds a
    new context and makes new handshakes use it. A constructor failure (missing or broken files)
    raises: a server must not start without its certificate.
    """

    def __init__(
        self, cert_file: Path, key_file: Path, client_cas: Mapping[str, Path] | None = None
    ) -> None:
        """`client_cas`: the CA files client certificates are verified against, by the name
        `issuers` reports for a certificate one of them signed."""
        self.cert_file = cert_file
        self.key_file = key_file
        self.client_cas = dict(client_cas or {})
        contents = self._read()
        context, trust = self._build(contents)
        context.sni_callback = self._select
        self._listening = context
        self._current = context
        self._trust = trust
        self._digest = _digest(contents)
        self._refused: bytes | None = None

    @property
    def context(self) -> ssl.SSLContext:
        return self._listening

    def reload_if_changed(self) -> bool:
        """Load changed files; True when new handshakes now use them."""
        try:
            contents = self._read()
        except OSError as exc:
            self._refuse(f"unreadable: {exc}".encode(), exc)
            return False
        digest = _digest(contents)
        if digest in (self._digest, self._refused):
            return False
        try:
            # The key is loaded by path, a moment after it was read for the digest. If it
            # changed in between, the next poll sees a new digest and loads again.
            context, trust = self._build(contents)
        except (ssl.SSLError, ValueError, OSError) as exc:
            self._refuse(digest, exc)
            return False
        self._current, self._trust = context, trust
        self._digest = digest
        self._refused = None
        log.info("serving certificate reloaded from %s", self.cert_file)
        return True

    def _refuse(self, marker: bytes, exc: Exception) -> None:
        # Warn once per bad content, not on every poll while a writer finishes.
        if marker != self._refused:
            log.warning("kept the previous serving certificate; new files do not load: %s", exc)
        self._refused = marker

    def issuers(self, leaf: x509.Certificate) -> frozenset[str]:
        """The names of the client CAs that signed this (verified) certificate."""
        return frozenset(
            name for name, cas in self._trust.items() if any(_signed_by(leaf, ca) for ca in cas)
        )

    def _read(self) -> _Contents:
        cas = tuple((name, path.read_bytes()) for name, path in self.client_cas.items())
        return self.cert_file.read_bytes(), self.key_file.read_bytes(), cas

    def _build(self, contents: _Contents) -> tuple[ssl.SSLContext, _Trust]:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        trust: _Trust = {}
        for name, pem in contents[2]:
            context.load_verify_locations(cadata=pem.decode("ascii"))
            trust[name] = x509.load_pem_x509_certificates(pem)
        if trust:
            context.verify_mode = ssl.CERT_OPTIONAL
        return context, trust

    def _select(
        self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        current = self._current
        if current is not context:
            connection.context = current


# The serving certificate, its key, and each client CA by name; the CA certificates by name.
_Contents = tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]
_Trust = dict[str, list[x509.Certificate]]


def _digest(contents: _Contents) -> bytes:
    cert, key, cas = contents
    digest = hashlib.sha256()
    for part in (cert, key, *(f"{name}:".encode() + pem for name, pem in cas)):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.digest()


def _signed_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


async def watch_files(tls: ServerTls, interval_seconds: float) -> None:
    """Poll the files forever (cancel to stop); reading runs off the event loop."""
    while True:
        await asyncio.sleep(interval_seconds)
        await asyncio.to_thread(tls.reload_if_changed)


# -- the peer certificate in the scope -----------------------------------------------------------


@functools.cache
def _cipher_ids() -> Mapping[str, int]:
    # OpenSSL's cipher id is 0x0300XXXX, where XXXX is the IANA number the ASGI spec wants.
    ciphers = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).get_ciphers()
    return {cipher["name"]: cipher["id"] & 0xFFFF for cipher in ciphers}


def tls_extension(ssl_object: ssl.SSLObject, peer: x509.Certificate | None) -> dict[str, Any]:
    """The ASGI TLS extension for one connection, after its handshake; `peer` is its verified
    client certificate."""
    cipher = ssl_object.cipher()
    version = ssl_object.version()
    return {
        "server_cert": None,
        "client_cert_chain": [peer.public_bytes(serialization.Encoding.PEM).decode()]
        if peer
        else [],
        "client_cert_name": peer.subject.rfc4514_string() if peer else None,
        "client_cert_error": None,  # an unverified certificate never gets this far
        "tls_version": _TLS_VERSIONS.get(version) if version else None,
        "cipher_suite": _cipher_ids().get(cipher[0]) if cipher else None,
    }


# Which client CAs signed the peer certificate: a list of `ServerTls` CA names.
ISSUERS_EXTENSION = "pushscale.client_cert_issuers"


def _with_tls(app: App, transport: asyncio.BaseTransport, server_tls: ServerTls) -> App:
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:  # the spec forbids the extension on plain connections
        return app
    der = ssl_object.getpeercert(binary_form=True)
    peer = x509.load_der_x509_certificate(der) if der else None
    extension = tls_extension(ssl_object, peer)
    issuers = sorted(server_tls.issuers(peer)) if peer else []

    async def with_tls(scope: Scope, receive: Receive, send: Send) -> None:
        extensions = scope.setdefault("extensions", {})
        extensions["tls"] = {
            **extension,
            "client_cert_chain": list(extension["client_cert_chain"]),
        }
        extensions[ISSUERS_EXTENSION] = list(issuers)
        await app(scope, receive, send)

    return with_tls


class TlsHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, adding the ASGI TLS extension to every request."""

    def __init__(self, *args: Any, server_tls: ServerTls, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._server_tls = server_tls

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # asyncio calls this after the handshake, so the peer certificate is known here.
        self.app = _with_tls(self.app, transport, self._server_tls)


class TlsH11Protocol(H11Protocol):
    """The same for uvicorn's h11 protocol."""

    def __init__(self, *args: Any, server_tls: ServerTls, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._server_tls = server_tls

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app = _with_tls(self.app, transport, self._server_tls)


@functools.lru_cache(maxsize=64)
def _subject(pem: str) -> tuple[str, tuple[str, ...]]:
    names = x509.load_pem_x509_certificate(pem.encode("ascii")).subject
    common = names.get_attributes_for_oid(NameOID.COMMON_NAME)
    organizations = names.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return (
        str(common[0].value) if common else "",
        tuple(str(o.value) for o in organizations),
    )


def client_certificate(scope: Mapping[str, Any]) -> ClientCert | None:
    """The verified client certificate: None without one; its CN is "" if it has none."""
    extensions = scope.get("extensions", {})
    tls = extensions.get("tls")
    if not tls or not tls.get("client_cert_chain"):
        return None
    common_name, organizations = _subject(tls["client_cert_chain"][0])
    issuers = frozenset(extensions.get(ISSUERS_EXTENSION, ()))
    return ClientCert(common_name, organizations, issuers)


def uvicorn_config(
    app: App,
    tls: ServerTls,
    *,
    http: Literal["httptools", "h11"] = "httptools",
    **options: Any,
) -> uvicorn.Config:
    """A `uvicorn.Config` serving over `tls.context` with the TLS extension in every scope.

    `options` go to `uvicorn.Config` as they are (host, port, fd, log_level, ...).
    """
    protocol = TlsHttpToolsProtocol if http == "httptools" else TlsH11Protocol
    return uvicorn.Config(
        app,
        # uvicorn calls it like the protocol class, with the connection's arguments.
        http=cast(type[asyncio.Protocol], functools.partial(protocol, server_tls=tls)),
        ssl_context_factory=lambda config, default: tls.context,
        **options,
    )
