"""The Kubernetes API as the adapter uses it: a thin shell over the official client, raw JSON out.

`adapter.discovery` lists and watches pods and reads Services through `KubeApi`; the metrics
API's authentication and authorization ask it for TokenReviews and SubjectAccessReviews; the
controller (`adapter.controller.reconcile`, `.lease`) reads HPAs, scale subresources, pods and
the custom metrics API, patches scales and pods, posts Events and keeps its Lease. Every
call goes through the official `kubernetes` client (kubeconfig and in-cluster loading, TLS,
token refresh) with `_preload_content=False`, so callers get the wire JSON that `adapter.pods`
parses, not the client's models. The client blocks: the async methods run it in a worker
thread, and `watch_pods` is itself blocking, for a thread of its own.

Errors, all raised with the client's exception chained:

    KubeError          an API answer that is not a success, or no answer at all
     └── WatchExpired  a watch's resourceVersion was compacted away (410): list again

No message carries the bearer token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import urllib3

if TYPE_CHECKING:
    from kubernetes.client import ApiClient
    from kubernetes.client.exceptions import ApiException

JsonObject = dict[str, Any]

# Object patches are JSON merge patches (RFC 7386): plain JSON that every resource accepts.
MERGE_PATCH = "application/merge-patch+json"
_LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"

# A watch whose server stays silent this long past its own timeoutSeconds is gone.
_WATCH_READ_SLACK_SECONDS = 10.0


class KubeError(Exception):
    """A failed API call; `status` is the HTTP code when the server answered."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason


class WatchExpired(KubeError):
    """The watch's resourceVersion is older than the server keeps: list again, then watch."""


def _status_fields(body: str | bytes | None) -> tuple[str | None, str | None]:
    """The `message` and `reason` of a Status body, when the body is one."""
    try:
        status = json.loads(body or b"")
    except ValueError:
        return None, None
    if not isinstance(status, dict):
        return None, None
    return status.get("message"), status.get("reason")


def _api_exception() -> type[ApiException]:
    """The client's error class. The `kubernetes` package is imported when a `KubeApi` is
    made, not with this module: it costs ~1.5 s of start-up (every generated model), which an
    adapter serving `--static-pods` without authentication never needs."""
    from kubernetes.client.exceptions import ApiException

    return ApiException


class KubeApi:
    def __init__(self, client: ApiClient, *, request_timeout_seconds: float = 10.0) -> None:
        from kubernetes.client import CoreV1Api

        self._client = client
        self._core = CoreV1Api(client)
        self._timeout = request_timeout_seconds

    @classmethod
    def from_config(cls, kubeconfig: str | None) -> KubeApi:
        """In a pod, its service account; else the given or the default kubeconfig."""
        from kubernetes import config
        from kubernetes.client import ApiClient, Configuration
        from kubernetes.config.config_exception import ConfigException

        configuration = Configuration()
        try:
            if kubeconfig is None:
                try:
                    config.load_incluster_config(  # type: ignore[no-untyped-call]
                        client_configuration=configuration
                    )
                    return cls(ApiClient(configuration))
                except ConfigException:
                    pass
            # persist_config=False: a refreshed token must not be written back to the user's file.
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, client_configuration=configuration, persist_config=False
            )
        except (ConfigException, OSError, ValueError) as exc:
            where = kubeconfig or "not in a cluster, and the default kubeconfig"
            raise KubeError(f"no Kubernetes API configuration ({where}): {exc}") from exc
        return cls(ApiClient(configuration))

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    # The calls, each one request.

    async def list_pods(self, label_selector: str) -> tuple[list[JsonObject], str]:
        """Pods in every namespace, and the list's resourceVersion to watch from."""
        body = await self._call(
            f"list pods ({label_selector})",
            lambda: self._core.list_pod_for_all_namespaces(
                label_selector=label_selector,
                _preload_content=False,
                _request_timeout=self._timeout,
            ),
        )
        assert body is not None
        items = body.get("items") or []
        return list(items), str((body.get("metadata") or {}).get("resourceVersion", ""))

    async def read_service(self, namespace: str, name: str) -> JsonObject | None:
        return await self._call(
            f"read service {namespace}/{name}",
            lambda: self._core.read_namespaced_service(
                name, namespace, _preload_content=False, _request_timeout=self._timeout
            ),
            missing_ok=True,
        )

    async def read_config_map(self, namespace: str, name: str) -> JsonObject | None:
        return await self._call(
            f"read configmap {namespace}/{name}",
            lambda: self._core.read_namespaced_config_map(
                name, namespace, _preload_content=False, _request_timeout=self._timeout
            ),
            missing_ok=True,
        )

    async def create_token_review(self, body: JsonObject) -> JsonObject:
        return await self.request(
            "create tokenreview", "POST", "/apis/authentication.k8s.io/v1/tokenreviews", body=body
        )

    async def create_subject_access_review(self, body: JsonObject) -> JsonObject:
        return await self.request(
            "create subjectaccessreview",
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            body=body,
        )

    def watch_pods(
        self, label_selector: str, resource_version: str, timeout_seconds: int
    ) -> PodWatch:
        """Pod events after `resource_version`, until the server ends the watch.

        Blocking: iterate it in a thread. `PodWatch.stop()` from any thread ends it at once.
        """

        def open_watch() -> urllib3.BaseHTTPResponse:
            return self._raw(
                self._core.list_pod_for_all_namespaces(
                    label_selector=label_selector,
                    resource_version=resource_version,
                    watch=True,
                    allow_watch_bookmarks=True,
                    timeout_seconds=timeout_seconds,
                    _preload_content=False,
                    _request_timeout=(
                        self._timeout,
                        timeout_seconds + _WATCH_READ_SLACK_SECONDS,
                    ),
                )
            )

        what = f"watch pods ({label_selector}) from {resource_version}"
        return PodWatch(open_watch, what, self._error)

    # The controller's calls (adapter.controller): raw paths, so bodies go out exactly as given
    # (the generated methods validate bodies into models) and one helper serves them all.

    async def list_hpas(self, namespace: str | None = None) -> list[JsonObject]:
        """autoscaling/v2 HorizontalPodAutoscalers in one namespace, or in all (None)."""
        where = f"/namespaces/{namespace}" if namespace else ""
        body = await self.request(
            f"list horizontalpodautoscalers{f' in {namespace}' if namespace else ''}",
            "GET",
            f"/apis/autoscaling/v2{where}/horizontalpodautoscalers",
        )
        return list(body.get("items") or [])

    async def read_scale(self, scale_path: str) -> JsonObject:
        """A `scale` subresource (autoscaling/v1 Scale), e.g.
        `/apis/apps/v1/namespaces/NS/deployments/NAME/scale`."""
        return await self.request(f"read {scale_path}", "GET", scale_path)

    async def patch_scale(
        self, scale_path: str, replicas: int, resource_version: str | None
    ) -> JsonObject:
        """Set spec.replicas; with `resource_version` the API server refuses (409) a scale that
        changed since it was read, so a concurrent scale-up is never overwritten."""
        patch: JsonObject = {"spec": {"replicas": replicas}}
        if resource_version:
            patch["metadata"] = {"resourceVersion": resource_version}
        return await self.request(
            f"patch {scale_path}", "PATCH", scale_path, body=patch, content_type=MERGE_PATCH
        )

    async def list_namespaced_pods(self, namespace: str, label_selector: str) -> list[JsonObject]:
        body = await self.request(
            f"list pods in {namespace} ({label_selector})",
            "GET",
            f"/api/v1/namespaces/{namespace}/pods",
            query={"labelSelector": label_selector},
        )
        return list(body.get("items") or [])

    async def patch_pod_annotations(
        self, namespace: str, name: str, annotations: dict[str, str]
    ) -> JsonObject:
        return await self.request(
            f"annotate pod {namespace}/{name}",
            "PATCH",
            f"/api/v1/namespaces/{namespace}/pods/{name}",
            body={"metadata": {"annotations": annotations}},
            content_type=MERGE_PATCH,
        )

    async def create_event(self, namespace: str, event: JsonObject) -> JsonObject:
        """A core/v1 Event, as `CoreV1Api.create_namespaced_event` and client-go's recorder
        post them (`kubectl describe` shows these)."""
        return await self.request(
            f"create event in {namespace}",
            "POST",
            f"/api/v1/namespaces/{namespace}/events",
            body=event,
        )

    async def read_lease(self, namespace: str, name: str) -> JsonObject | None:
        path = f"{_LEASES.format(namespace=namespace)}/{name}"
        read = f"read lease {namespace}/{name}"
        return await self._send(read, "GET", path, None, None, "", missing_ok=True)

    async def create_lease(self, namespace: str, lease: JsonObject) -> JsonObject:
        """Raises KubeError with status 409 when someone created it first."""
        return await self.request(
            f"create lease in {namespace}", "POST", _LEASES.format(namespace=namespace), body=lease
        )

    async def replace_lease(self, namespace: str, name: str, lease: JsonObject) -> JsonObject:
        """PUT with the lease's metadata.resourceVersion: a 409 KubeError when it changed."""
        return await self.request(
            f"update lease {namespace}/{name}",
            "PUT",
            f"{_LEASES.format(namespace=namespace)}/{name}",
            body=lease,
        )

    async def pod_metric(
        self, namespace: str, metric: str, label_selector: str, version: str = "v1beta2"
    ) -> JsonObject:
        """The custom metrics API's `MetricValueList` for the pods the selector picks, through
        the API server (the aggregator proxies it to the adapter), as the HPA reads it."""
        return await self.request(
            f"read {metric} of pods in {namespace} ({label_selector})",
            "GET",
            f"/apis/custom.metrics.k8s.io/{version}/namespaces/{namespace}/pods/*/{metric}",
            query={"labelSelector": label_selector},
        )

    async def request(
        self,
        what: str,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: JsonObject | None = None,
        content_type: str = "application/json",
    ) -> JsonObject:
        """One request to `path` with the client's configuration (server, TLS, credentials,
        token refresh); the answer's JSON. Failures, a 404 included, raise KubeError."""
        answer = await self._send(what, method, path, query, body, content_type, missing_ok=False)
        assert answer is not None  # only a missing_ok call answers None
        return answer

    async def _send(
        self,
        what: str,
        method: str,
        path: str,
        query: dict[str, str] | None,
        body: JsonObject | None,
        content_type: str,
        *,
        missing_ok: bool,
    ) -> JsonObject | None:

        def send() -> urllib3.BaseHTTPResponse:
            headers = {"Accept": "application/json"}
            if body is not None:
                headers["Content-Type"] = content_type
            serialized = self._client.param_serialize(
                method=method,
                resource_path=path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._client.call_api(*serialized, _request_timeout=self._timeout)
            if not 200 <= response.status <= 299:
                response.read()  # type: ignore[no-untyped-call]
                raise _api_exception().from_response(http_resp=response, body=None, data=None)
            return self._raw(response.response)

        return await self._call(what, send, missing_ok=missing_ok)

    # The plumbing.

    async def _call(
        self, what: str, request: Callable[[], object], *, missing_ok: bool = False
    ) -> JsonObject | None:
        return await asyncio.to_thread(self._blocking_call, what, request, missing_ok)

    def _blocking_call(
        self, what: str, request: Callable[[], object], missing_ok: bool
    ) -> JsonObject | None:
        try:
            response = self._raw(request())
            try:
                body = response.data
            finally:
                response.release_conn()
        except _api_exception() as exc:
            if missing_ok and exc.status == 404:
                return None
            raise self._error(what, exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._error(what, exc) from exc
        try:
            answer = json.loads(body)
        except ValueError as exc:
            raise KubeError(f"{what}: the answer is not JSON") from exc
        if not isinstance(answer, dict):
            raise KubeError(f"{what}: the answer is not a JSON object")
        return answer

    @staticmethod
    def _raw(response: object) -> urllib3.BaseHTTPResponse:
        # With _preload_content=False the generated methods return the urllib3 response, not
        # the model their annotations promise.
        return cast(urllib3.BaseHTTPResponse, response)

    def _error(self, what: str, exc: BaseException) -> KubeError:
        """One line for a failed call, with any credential scrubbed out."""
        status: int | None = None
        reason: str | None = None
        if isinstance(exc, _api_exception()):
            status = exc.status
            message, reason = _status_fields(exc.body)
            text = f"HTTP {exc.status} {reason or exc.reason or ''}".rstrip()
            if message:
                text += f": {message}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        text = f"{what}: {text}"
        for secret in self._secrets():
            text = text.replace(secret, "<redacted>")
        error_type = WatchExpired if status == 410 else KubeError
        return error_type(text, status, reason)

    def _secrets(self) -> list[str]:
        configuration = self._client.configuration
        secrets = []
        for value in (configuration.api_key or {}).values():
            if isinstance(value, str) and value:
                secrets.append(value)
                _, _, bare = value.partition(" ")
                if bare:
                    secrets.append(bare)
        if configuration.password:
            secrets.append(configuration.password)
        # The longest first, so "Bearer abc" goes before "abc".
        return sorted(secrets, key=len, reverse=True)


class PodWatch(Iterator[tuple[str, JsonObject]]):
    """One watch request's events, as (type, raw object JSON); ends when the server ends it.

    An ERROR event ends it with `WatchExpired` (code 410) or `KubeError`. `stop()` may be called
    from another thread: it shuts the socket so a read blocked in this one returns at once.
    """

    def __init__(
        self,
        open_watch: Callable[[], urllib3.BaseHTTPResponse],
        what: str,
        error: Callable[[str, BaseException], KubeError],
    ) -> None:
        self._open = open_watch
        self._what = what
        self._error = error
        self._response: urllib3.BaseHTTPResponse | None = None
        self._stop = threading.Event()
        self._events = self._read()

    def __next__(self) -> tuple[str, JsonObject]:
        return next(self._events)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            # The connection may already be back in the pool or closed; then nothing blocks.
            with contextlib.suppress(Exception):
                response.shutdown()

    def _read(self) -> Iterator[tuple[str, JsonObject]]:
        if self._stop.is_set():
            return
        try:
            self._response = self._open()
        except (_api_exception(), urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._error(self._what, exc) from exc
        try:
            # stop() sets the flag before it looks for a response to shut: one of us sees it.
            if self._stop.is_set():
                return
            yield from self._events_of(self._response)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if not self._stop.is_set():
                raise self._error(self._what, exc) from exc
        finally:
            response, self._response = self._response, None
            # Closed first: a watch cut short leaves its connection unfit for another request.
            response.close()
            response.release_conn()

    def _events_of(self, response: urllib3.BaseHTTPResponse) -> Iterator[tuple[str, JsonObject]]:
        buffer = b""
        for chunk in response.stream(None):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if self.stopped:
                    return
                if line.strip():
                    yield self._event(line)
        if buffer.strip() and not self.stopped:
            yield self._event(buffer)

    def _event(self, line: bytes) -> tuple[str, JsonObject]:
        try:
            event = json.loads(line)
            kind, obj = event["type"], event["object"]
        except (ValueError, KeyError, TypeError) as exc:
            raise KubeError(f"{self._what}: not a watch event: {line[:200]!r}") from exc
        if kind == "ERROR":
            # The API server reports a compacted resourceVersion in the stream, not as HTTP 410.
            status = obj if isinstance(obj, dict) else {}
            code = status.get("code")
            text = f"{self._what}: {status.get('reason')} ({code}): {status.get('message')}"
            error_type = WatchExpired if code == 410 else KubeError
            raise error_type(text, code, status.get("reason"))
        return str(kind), obj
