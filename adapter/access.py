"""Who may call the API: authentication and authorization delegated to the Kubernetes API.

`adapter.server` builds an `Access` with `build_access(settings, kube)` and `adapter.app`'s gate
calls `Access.check(scope)` on every request but the probes. The parts come from `adapter.auth`
(front-proxy headers, client certificates, TokenReview, SubjectAccessReview, their caches) and
`adapter.tls` (the verified client certificate in the scope, and which CA issued it); this
module only joins them to a request, and finds the front-proxy CA and allowed names and the
client CA the way k8s.io/apiserver does: flags first, else the
`kube-system/extension-apiserver-authentication` ConfigMap.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from starlette.types import Scope

from adapter.auth import (
    CLIENT_CA,
    FRONT_PROXY_CA,
    Authenticator,
    Authorizer,
    ConfigMapError,
    RequestHeaderConfig,
    request_attributes,
    request_header_config_from_config_map,
)
from adapter.errors import StartupError
from adapter.kube import KubeApi, KubeError
from adapter.settings import AdapterSettings
from adapter.tls import client_certificate

log = logging.getLogger("pushscale.adapter.access")

AUTHENTICATION_CONFIG_MAP = ("kube-system", "extension-apiserver-authentication")
_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
          "DELETE": "delete"}  # fmt: skip


class Access:
    def __init__(self, authenticator: Authenticator, authorizer: Authorizer) -> None:
        self._authenticator = authenticator
        self._authorizer = authorizer

    async def check(self, scope: Scope) -> None:
        headers = [
            (key.decode("latin-1"), value.decode("latin-1")) for key, value in scope["headers"]
        ]
        user = await self._authenticator.authenticate(client_certificate(scope), headers)
        verb = _VERBS.get(scope["method"], scope["method"].lower())
        await self._authorizer.authorize(user, request_attributes(scope["path"], verb))


async def build_access(
    settings: AdapterSettings, kube: KubeApi | None
) -> tuple[Access, dict[str, Path]]:
    """The access check, and the client CA files the TLS context must verify against, by the
    name `adapter.tls.ServerTls.issuers` gives them (`FRONT_PROXY_CA`, `CLIENT_CA`)."""
    if kube is None:
        raise StartupError(
            "authentication and authorization need the Kubernetes API: run in a cluster, give "
            "--kubeconfig, or use --authentication-skip on a laptop"
        )
    needs_config_map = (
        settings.requestheader_client_ca_file is None or settings.client_ca_file is None
    )
    data = await _authentication_config(kube) if needs_config_map else {}
    request_header, front_proxy_ca = _front_proxy(settings, data)
    cas = {FRONT_PROXY_CA: front_proxy_ca} if front_proxy_ca is not None else {}
    client_ca = _client_ca(settings, data)
    if client_ca is not None:
        cas[CLIENT_CA] = client_ca
    authenticator = Authenticator(request_header, kube.create_token_review)
    return Access(authenticator, Authorizer(kube.create_subject_access_review)), cas


async def _authentication_config(kube: KubeApi) -> Mapping[str, str]:
    namespace, name = AUTHENTICATION_CONFIG_MAP
    try:
        config_map = await kube.read_config_map(namespace, name)
    except KubeError as exc:
        raise StartupError(f"cannot read the ConfigMap {namespace}/{name}: {exc}") from exc
    return dict((config_map or {}).get("data") or {})


def _front_proxy(
    settings: AdapterSettings, data: Mapping[str, str]
) -> tuple[RequestHeaderConfig | None, Path | None]:
    if settings.requestheader_client_ca_file is not None:
        config = RequestHeaderConfig(allowed_names=frozenset(settings.requestheader_allowed_names))
        return config, Path(settings.requestheader_client_ca_file)
    namespace, name = AUTHENTICATION_CONFIG_MAP
    try:
        found = request_header_config_from_config_map(data)
    except ConfigMapError as exc:
        raise StartupError(f"the ConfigMap {namespace}/{name}: {exc}") from exc
    if found is None:
        log.warning(
            "no front-proxy CA in %s/%s: the kube-aggregator cannot authenticate to this "
            "adapter; only bearer tokens will be accepted", namespace, name,
        )  # fmt: skip
        return None, None
    config, pem = found
    if settings.requestheader_allowed_names:
        config = RequestHeaderConfig(
            frozenset(settings.requestheader_allowed_names),
            config.username_headers, config.uid_headers, config.group_headers,
            config.extra_prefixes,
        )  # fmt: skip
    return config, _written(settings, "requestheader-client-ca.crt", pem)


def _client_ca(settings: AdapterSettings, data: Mapping[str, str]) -> Path | None:
    if settings.client_ca_file is not None:
        return Path(settings.client_ca_file)
    pem = data.get("client-ca-file", "")
    if not pem.strip():
        log.info("no client-ca-file in %s/%s: user client certificates are not accepted",
                 *AUTHENTICATION_CONFIG_MAP)  # fmt: skip
        return None
    return _written(settings, "client-ca.crt", pem)


def _written(settings: AdapterSettings, name: str, pem: str) -> Path:
    # Into --cert-dir, where the TLS layer reads (and re-reads) its files.
    path = Path(settings.cert_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(pem, encoding="utf-8")
    return path
