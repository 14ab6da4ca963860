"""A Kubernetes API server for tests: real HTTP, the real JSON wire format, state set by the test.

The one fake in the suite (docs/architecture.md): `adapter.kube.KubeApi`, and through it the
official `kubernetes` client, talks to it over loopback as to a real API server. aiohttp serves
it from a thread with its own event loop, so blocking client calls from a test and async tests
both work. What it serves is one route table (`FakeKube._routes`) over one object store keyed
by resource; the controller's HPAs, scale subresource, events and leases go there too.

Behaviour copied from the real server, because clients depend on it:
- one global resourceVersion, bumped by every change; lists carry it, objects carry their own;
- list items have no kind/apiVersion, single objects and watch event objects do;
- a watch from a resourceVersion older than the compaction point gets one ERROR event with a
  410 Expired Status, then the stream ends (the HTTP status stays 200);
- a watch with a label selector sees an object leave the selection as DELETED, enter it as ADDED;
- errors are Status objects; an unknown bearer token is a 401;
- a TokenReview that fails omits `authenticated` (Go's omitempty), and a denied
  SubjectAccessReview says `allowed: false` without `denied`, as RBAC answers;
- PATCH takes merge patches (and strategic ones, the same for the fields used here); a
  `metadata.resourceVersion` in a patch or a PUT is a precondition: stale is a 409 Conflict;
- a Deployment's `scale` subresource is an autoscaling/v1 `Scale` whose `status.selector` is
  the Deployment's selector as a string; patching its spec.replicas changes the Deployment;
- the custom metrics API, which the aggregator proxies to the adapter, answers a
  `MetricValueList` built by the adapter's own `adapter.wire`, from values the test sets,
  for the stored pods the label selector picks (none: 404, as the adapter answers).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from aiohttp import web
from kubernetes.client import ApiClient, Configuration

from adapter.kube import KubeApi
from adapter.pods import METRICS_PORT_ANNOTATION, WORKERS_ANNOTATION
from adapter.selectors import Selector, SelectorError, parse_selector
from adapter.wire import Described, Value, metric_value_list

JsonObject = dict[str, Any]
AccessPolicy = Callable[[JsonObject], tuple[bool, str]]

# resource → (kind, apiVersion), for every resource the fake stores.
KINDS = {
    "pods": ("Pod", "v1"),
    "services": ("Service", "v1"),
    "configmaps": ("ConfigMap", "v1"),
    "horizontalpodautoscalers": ("HorizontalPodAutoscaler", "autoscaling/v2"),
    "deployments": ("Deployment", "apps/v1"),
    "events": ("Event", "v1"),
    "leases": ("Lease", "coordination.k8s.io/v1"),
}
_PATCH_TYPES = (
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
# The real API server ends a watch after 30-60 minutes; tests always say how long they want.
DEFAULT_WATCH_SECONDS = 60


class Seen(NamedTuple):
    method: str
    path: str
    query: dict[str, str]


@dataclass(frozen=True)
class _Change:
    resource_version: int
    resource: str
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    obj: JsonObject
    old: JsonObject | None = None


def status(code: int, reason: str, message: str, **details: Any) -> JsonObject:
    body: JsonObject = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def _answer(body: JsonObject, status_code: int = 200) -> web.Response:
    return web.json_response(body, status=status_code)


def _failure(code: int, reason: str, message: str, **details: Any) -> web.Response:
    return _answer(status(code, reason, message, **details), code)


class FakeKube:
    def __init__(self, token: str = "test-token") -> None:
        self.token = token
        # Test controls; plain attributes are read by the server thread on each request.
        self.tokens: dict[str, JsonObject] = {}
        self.access_policy: AccessPolicy = lambda spec: (False, "")
        self.unavailable = False
        self.requests: list[Seen] = []
        self.token_reviews: list[JsonObject] = []
        self.access_reviews: list[JsonObject] = []
        # The controller's writes, in order, with their bodies: (namespace, name, patch).
        self.scale_patches: list[tuple[str, str, JsonObject]] = []
        self.pod_patches: list[tuple[str, str, JsonObject]] = []
        # (namespace, metric) → pod name → value, served by the custom metrics API paths.
        self.pod_metrics: dict[tuple[str, str], dict[str, float]] = {}
        # When set, the custom metrics API answers this (code, message) instead.
        self.metrics_failure: tuple[int, str] | None = None

        self._lock = threading.RLock()
        self._objects: dict[str, dict[tuple[str, str], JsonObject]] = {r: {} for r in KINDS}
        self._changes: list[_Change] = []
        self._resource_version = 1000
        self._compacted = 0
        self._watchers: set[asyncio.Event] = set()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # Lifecycle.

    def start(self) -> FakeKube:
        started = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._serve, args=(started, failure), name="fake-kube", daemon=True
        )
        self._thread.start()
        started.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._closing = True
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def configuration(self, token: str | None = None) -> Configuration:
        configuration = Configuration()
        configuration.host = self.url
        configuration.api_key = {"authorization": f"Bearer {token or self.token}"}
        return configuration

    def write_kubeconfig(self, path: Path, token: str | None = None) -> Path:
        """A kubeconfig file for this server, as `--kubeconfig` reads it: plain HTTP on loopback,
        the bearer token the server accepts (or `token`)."""
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "adapter", "user": {"token": token or self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "adapter"}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(document, indent=2))  # JSON is YAML
        return path

    @contextmanager
    def api(self, token: str | None = None, **options: Any) -> Iterator[KubeApi]:
        """A `KubeApi` on this server, closed at the end of the block."""
        api = KubeApi(ApiClient(self.configuration(token)), **options)
        try:
            yield api
        finally:
            api.close()

    def _serve(self, started: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._start_app())
        except BaseException as exc:
            failure.append(exc)
            started.set()
            loop.close()
            return
        started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _start_app(self) -> None:
        app = web.Application(middlewares=[self._gate])
        app.add_routes(self._routes())
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def _shutdown(self) -> None:
        self._notify()
        if self._runner is not None:
            await self._runner.cleanup()

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/pods", self._collection("pods")),
            web.get("/api/v1/namespaces/{namespace}/pods", self._collection("pods")),
            web.get("/api/v1/namespaces/{namespace}/pods/{name}", self._item("pods")),
            web.get("/api/v1/namespaces/{namespace}/services/{name}", self._item("services")),
            web.get("/api/v1/namespaces/{namespace}/configmaps/{name}", self._item("configmaps")),
            web.post("/apis/authentication.k8s.io/v1/tokenreviews", self._token_review),
            web.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", self._access_review),
            web.patch("/api/v1/namespaces/{namespace}/pods/{name}", self._patch_pod),
            web.post("/api/v1/namespaces/{namespace}/events", self._create_event),
            web.get("/api/v1/namespaces/{namespace}/events", self._collection("events")),
            web.get("/apis/autoscaling/v2/horizontalpodautoscalers", self._collection(_HPAS)),
            web.get(f"{_HPA_PATH}", self._collection(_HPAS)),
            web.get(f"{_HPA_PATH}/{{name}}", self._item(_HPAS)),
            web.get(f"{_DEPLOYMENT_PATH}", self._item("deployments")),
            web.get(f"{_DEPLOYMENT_PATH}/scale", self._read_scale),
            web.patch(f"{_DEPLOYMENT_PATH}/scale", self._patch_scale),
            web.get(f"{_LEASE_PATH}/{{name}}", self._item("leases")),
            web.post(_LEASE_PATH, self._create_lease),
            web.put(f"{_LEASE_PATH}/{{name}}", self._replace_lease),
            web.get(_CUSTOM_METRICS_PATH, self._custom_metric),
        ]

    # Test controls: any thread.

    def add_pod(self, obj: JsonObject) -> JsonObject:
        return self._put("pods", obj, must_exist=False)

    def modify_pod(self, obj: JsonObject) -> JsonObject:
        return self._put("pods", obj, must_exist=True)

    def delete_pod(self, namespace: str, name: str) -> None:
        self._delete("pods", namespace, name)

    def add_service(self, obj: JsonObject) -> JsonObject:
        return self._put("services", obj, must_exist=False)

    def add_config_map(self, obj: JsonObject) -> JsonObject:
        return self._put("configmaps", obj, must_exist=False)

    def pod(self, namespace: str, name: str) -> JsonObject:
        with self._lock:
            return copy.deepcopy(self._objects["pods"][(namespace, name)])

    def add_hpa(self, obj: JsonObject) -> JsonObject:
        return self._put(_HPAS, obj, must_exist=False)

    def modify_hpa(self, obj: JsonObject) -> JsonObject:
        return self._put(_HPAS, obj, must_exist=True)

    def add_deployment(self, obj: JsonObject) -> JsonObject:
        return self._put("deployments", obj, must_exist=False)

    def deployment(self, namespace: str, name: str) -> JsonObject:
        with self._lock:
            return copy.deepcopy(self._objects["deployments"][(namespace, name)])

    def set_replicas(self, namespace: str, name: str, replicas: int) -> JsonObject:
        """Someone else scales (the HPA scaling up, kubectl scale)."""
        deployment = self.deployment(namespace, name)
        deployment["spec"]["replicas"] = replicas
        return self._put("deployments", deployment, must_exist=True)

    def events(self, namespace: str | None = None) -> list[JsonObject]:
        """Every Event posted, oldest first."""
        with self._lock:
            events = [
                copy.deepcopy(obj)
                for (ns, _), obj in self._objects["events"].items()
                if namespace is None or ns == namespace
            ]
        return sorted(events, key=lambda obj: int(obj["metadata"]["resourceVersion"]))

    def lease(self, namespace: str, name: str) -> JsonObject | None:
        with self._lock:
            return copy.deepcopy(self._objects["leases"].get((namespace, name)))

    def put_lease(self, obj: JsonObject) -> JsonObject:
        """Create or overwrite a Lease (another candidate taking it over, say)."""
        metadata = obj.get("metadata") or {}
        key = (metadata.get("namespace", "default"), metadata["name"])
        with self._lock:
            exists = key in self._objects["leases"]
        return self._put("leases", obj, must_exist=exists, keep_identity=True)

    def set_pod_metric(self, namespace: str, metric: str, values: Mapping[str, float]) -> None:
        """What the custom metrics API serves for these pods (the others are left out)."""
        self.pod_metrics[(namespace, metric)] = dict(values)

    @property
    def resource_version(self) -> int:
        return self._resource_version

    def bookmark(self) -> int:
        """A BOOKMARK to the pod watches that allow them: the version moved on, elsewhere."""
        with self._lock:
            version = self._bump()
            kind, api_version = KINDS["pods"]
            metadata = {"resourceVersion": str(version)}
            obj = {"kind": kind, "apiVersion": api_version, "metadata": metadata}
            self._changes.append(_Change(version, "pods", "BOOKMARK", obj))
        self._wake()
        return version

    def expire_history(self) -> int:
        """Compact: every version up to now is gone, so open watches and old versions get 410."""
        with self._lock:
            self._compacted = self._bump()
            self._changes.clear()
        self._wake()
        return self._compacted

    def set_unavailable(self, unavailable: bool) -> None:
        """Down: every request is a 503 and open watches end, as when the API server restarts."""
        self.unavailable = unavailable
        self._wake()

    def _bump(self) -> int:
        self._resource_version += 1
        return self._resource_version

    def _put(
        self, resource: str, obj: JsonObject, *, must_exist: bool, keep_identity: bool = False
    ) -> JsonObject:
        obj = copy.deepcopy(obj)
        kind, api_version = KINDS[resource]
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", api_version)
        metadata = obj.setdefault("metadata", {})
        metadata.setdefault("namespace", "default")
        key = (metadata["namespace"], metadata["name"])
        with self._lock:
            store = self._objects[resource]
            old = store.get(key)
            if must_exist and old is None:
                raise KeyError(f"no {resource} {key[0]}/{key[1]} to modify")
            if not must_exist and old is not None:
                raise KeyError(f"{resource} {key[0]}/{key[1]} already exists")
            if old is not None and keep_identity:
                # An update keeps what the server set at creation, whatever the client sent.
                for field in ("uid", "creationTimestamp"):
                    metadata[field] = old["metadata"][field]
            version = self._bump()
            metadata["resourceVersion"] = str(version)
            metadata.setdefault("uid", str(uuid.uuid4()))
            metadata.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
            store[key] = obj
            event = "MODIFIED" if old is not None else "ADDED"
            self._changes.append(_Change(version, resource, event, obj, old))
        self._wake()
        return copy.deepcopy(obj)

    def _delete(self, resource: str, namespace: str, name: str) -> None:
        with self._lock:
            obj = copy.deepcopy(self._objects[resource].pop((namespace, name)))
            version = self._bump()
            obj["metadata"]["resourceVersion"] = str(version)
            self._changes.append(_Change(version, resource, "DELETED", obj))
        self._wake()

    def _wake(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._notify)

    def _notify(self) -> None:
        for watcher in self._watchers:
            watcher.set()

    # Serving: the server thread only.

    @web.middleware
    async def _gate(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        self.requests.append(Seen(request.method, request.path, dict(request.query)))
        if self.unavailable:
            return _failure(
                503, "ServiceUnavailable", "the server is currently unable to handle the request"
            )
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _failure(401, "Unauthorized", "Unauthorized")
        response: web.StreamResponse = await handler(request)
        return response

    def _item(self, resource: str) -> Callable[[web.Request], Any]:
        async def get(request: web.Request) -> web.Response:
            namespace, name = request.match_info["namespace"], request.match_info["name"]
            with self._lock:
                obj = self._objects[resource].get((namespace, name))
                obj = copy.deepcopy(obj)
            if obj is None:
                return _failure(
                    404, "NotFound", f'{resource} "{name}" not found', name=name, kind=resource
                )
            return _answer(obj)

        return get

    def _collection(self, resource: str) -> Callable[[web.Request], Any]:
        async def list_or_watch(request: web.Request) -> web.StreamResponse:
            try:
                selector = parse_selector(request.query.get("labelSelector"))
            except SelectorError as exc:
                return _failure(400, "BadRequest", f"unable to parse requirement: {exc}")
            namespace = request.match_info.get("namespace")

            def selected(obj: Mapping[str, Any] | None) -> bool:
                if obj is None:
                    return False
                metadata = obj.get("metadata") or {}
                if namespace is not None and metadata.get("namespace") != namespace:
                    return False
                return selector.matches(metadata.get("labels") or {})

            if request.query.get("watch") in ("true", "1"):
                return await self._watch(request, resource, selected)
            with self._lock:
                items = [
                    {k: v for k, v in copy.deepcopy(obj).items() if k not in ("kind", "apiVersion")}
                    for _, obj in sorted(self._objects[resource].items())
                    if selected(obj)
                ]
                version = self._resource_version
            kind, api_version = KINDS[resource]
            return _answer(
                {
                    "kind": f"{kind}List",
                    "apiVersion": api_version,
                    "metadata": {"resourceVersion": str(version)},
                    "items": items,
                }
            )

        return list_or_watch

    async def _watch(
        self,
        request: web.Request,
        resource: str,
        selected: Callable[[Mapping[str, Any] | None], bool],
    ) -> web.StreamResponse:
        query = request.query
        timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_SECONDS)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        since = query.get("resourceVersion") or "0"
        if not since.isdigit():
            return _failure(400, "BadRequest", f"invalid resource version: {since!r}")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        wake = asyncio.Event()
        self._watchers.add(wake)
        try:
            cursor = int(since)
            if cursor == 0:
                # "0" means any version: the current objects as ADDED, then changes.
                with self._lock:
                    cursor = self._resource_version
                    current = [copy.deepcopy(o) for _, o in sorted(self._objects[resource].items())]
                for obj in current:
                    if selected(obj):
                        await self._send(response, "ADDED", obj)
            while not self._closing and not self.unavailable:
                with self._lock:
                    expired = cursor < self._compacted
                    compacted = self._compacted
                    changes = [c for c in self._changes if c.resource_version > cursor]
                if expired:
                    message = f"too old resource version: {cursor} ({compacted})"
                    await self._send(response, "ERROR", status(410, "Expired", message))
                    break
                for change in changes:
                    cursor = change.resource_version
                    if change.resource != resource:
                        continue
                    event = self._event_for(change, selected, bookmarks)
                    if event is not None:
                        await self._send(response, *event)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), remaining)
                except TimeoutError:
                    break
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        finally:
            self._watchers.discard(wake)
        return response

    @staticmethod
    def _event_for(
        change: _Change, selected: Callable[[Mapping[str, Any] | None], bool], bookmarks: bool
    ) -> tuple[str, JsonObject] | None:
        if change.type == "BOOKMARK":
            return ("BOOKMARK", change.obj) if bookmarks else None
        now, before = selected(change.obj), selected(change.old)
        if change.type == "DELETED":
            return ("DELETED", change.obj) if now else None
        if now and before:
            return ("MODIFIED", change.obj)
        if now:
            return ("ADDED", change.obj)
        if before:
            return ("DELETED", change.obj)
        return None

    @staticmethod
    async def _send(response: web.StreamResponse, kind: str, obj: JsonObject) -> None:
        line = json.dumps({"type": kind, "object": obj}, separators=(",", ":")) + "\n"
        await response.write(line.encode())

    async def _token_review(self, request: web.Request) -> web.Response:
        review = await request.json()
        spec = review.get("spec") or {}
        self.token_reviews.append(copy.deepcopy(spec))
        user = self.tokens.get(spec.get("token", ""))
        result: JsonObject
        if user is None:
            result = {"user": {}, "error": "invalid bearer token"}
        else:
            result = {"authenticated": True, "user": copy.deepcopy(user)}
            if spec.get("audiences"):
                result["audiences"] = spec["audiences"]
        body = {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": result,
        }
        return _answer(body, 201)

    async def _access_review(self, request: web.Request) -> web.Response:
        review = await request.json()
        spec = review.get("spec") or {}
        self.access_reviews.append(copy.deepcopy(spec))
        allowed, reason = self.access_policy(spec)
        result: JsonObject = {"allowed": allowed}
        if reason:
            result["reason"] = reason
        body = {
            "kind": "SubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": result,
        }
        return _answer(body, 201)

    # The controller's resources.

    async def _patch_pod(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        patch = await self._patch_body(request)
        if isinstance(patch, web.Response):
            return patch
        with self._lock:
            obj = copy.deepcopy(self._objects["pods"].get((namespace, name)))
        if obj is None:
            return _not_found("pods", name)
        self.pod_patches.append((namespace, name, patch))
        merged = merge_patch(obj, patch)
        return _answer(self._put("pods", merged, must_exist=True, keep_identity=True))

    async def _create_event(self, request: web.Request) -> web.Response:
        event = await request.json()
        metadata = event.setdefault("metadata", {})
        metadata["namespace"] = request.match_info["namespace"]
        if not metadata.get("name"):
            if not metadata.get("generateName"):
                return _failure(422, "Invalid", "metadata.name: Required value")
            metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
        try:
            return _answer(self._put("events", event, must_exist=False), 201)
        except KeyError:
            return _already_exists("events", metadata["name"])

    def _scale_of(self, namespace: str, name: str) -> JsonObject | None:
        with self._lock:
            deployment = copy.deepcopy(self._objects["deployments"].get((namespace, name)))
        if deployment is None:
            return None
        metadata, spec = deployment["metadata"], deployment.get("spec") or {}
        match_labels = (spec.get("selector") or {}).get("matchLabels") or {}
        replicas = spec.get("replicas", 1)
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                key: metadata[key]
                for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            },
            "spec": {"replicas": replicas},
            "status": {
                "replicas": (deployment.get("status") or {}).get("replicas", replicas),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(match_labels.items())),
            },
        }

    async def _read_scale(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        scale = self._scale_of(namespace, name)
        if scale is None:
            return _not_found("deployments.apps", name)
        return _answer(scale)

    async def _patch_scale(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        patch = await self._patch_body(request)
        if isinstance(patch, web.Response):
            return patch
        with self._lock:
            deployment = copy.deepcopy(self._objects["deployments"].get((namespace, name)))
            if deployment is None:
                return _not_found("deployments.apps", name)
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != deployment["metadata"]["resourceVersion"]:
                return _conflict("deployments.apps", name)
            replicas = (patch.get("spec") or {}).get("replicas")
            if replicas is not None:
                if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
                    return _failure(422, "Invalid", f"spec.replicas: Invalid value: {replicas!r}")
                deployment["spec"]["replicas"] = replicas
            self.scale_patches.append((namespace, name, patch))
            self._put("deployments", deployment, must_exist=True, keep_identity=True)
        scale = self._scale_of(namespace, name)
        assert scale is not None
        return _answer(scale)

    async def _create_lease(self, request: web.Request) -> web.Response:
        lease = await request.json()
        metadata = lease.setdefault("metadata", {})
        metadata["namespace"] = request.match_info["namespace"]
        metadata.pop("resourceVersion", None)
        try:
            return _answer(self._put("leases", lease, must_exist=False), 201)
        except KeyError:
            return _already_exists("leases.coordination.k8s.io", metadata.get("name", ""))

    async def _replace_lease(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        lease = await request.json()
        metadata = lease.setdefault("metadata", {})
        metadata["namespace"] = namespace
        with self._lock:
            current = self._objects["leases"].get((namespace, name))
            if current is None:
                return _not_found("leases.coordination.k8s.io", name)
            if metadata.get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return _conflict("leases.coordination.k8s.io", name)
            return _answer(self._put("leases", lease, must_exist=True, keep_identity=True))

    async def _custom_metric(self, request: web.Request) -> web.Response:
        version = request.match_info["version"]
        namespace, metric = request.match_info["namespace"], request.match_info["metric"]
        if version not in ("v1beta1", "v1beta2"):
            return _not_found("custom.metrics.k8s.io", version)
        if self.metrics_failure is not None:
            code, message = self.metrics_failure
            return _failure(code, _REASONS.get(code, "InternalError"), message)
        try:
            selector: Selector = parse_selector(request.query.get("labelSelector"))
        except SelectorError as exc:
            return _failure(400, "BadRequest", f"unable to parse requirement: {exc}")
        values = self.pod_metrics.get((namespace, metric), {})
        with self._lock:
            pods = [
                obj["metadata"]["name"]
                for (ns, name), obj in sorted(self._objects["pods"].items())
                if ns == namespace
                and name in values
                and selector.matches(obj["metadata"].get("labels") or {})
            ]
        if not pods:
            return _failure(404, "NotFound", f"no pod in {namespace} serves {metric}")
        now = time.time()
        window = 60 if not metric.endswith("_connected") else None
        items = [
            Value(Described("pods", pod, namespace), metric, values[pod], now, window)
            for pod in pods
        ]
        return _answer(metric_value_list(version, items, selector))

    async def _patch_body(self, request: web.Request) -> JsonObject | web.Response:
        if request.content_type not in _PATCH_TYPES:
            return _failure(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - {request.content_type}",
            )
        patch = await request.json()
        if not isinstance(patch, dict):
            return _failure(400, "BadRequest", "a merge patch must be a JSON object")
        return patch


_HPAS = "horizontalpodautoscalers"
_HPA_PATH = "/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers"
_DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
_LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
_CUSTOM_METRICS_PATH = (
    "/apis/custom.metrics.k8s.io/{version}/namespaces/{namespace}/pods/*/{metric}"
)
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            500: "InternalError", 503: "ServiceUnavailable"}  # fmt: skip


def _not_found(resource: str, name: str) -> web.Response:
    return _failure(404, "NotFound", f'{resource} "{name}" not found', name=name, kind=resource)


def _already_exists(resource: str, name: str) -> web.Response:
    return _failure(
        409, "AlreadyExists", f'{resource} "{name}" already exists', name=name, kind=resource
    )


def _conflict(resource: str, name: str) -> web.Response:
    message = (
        f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    return _failure(409, "Conflict", message, name=name, kind=resource)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, null deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _template_hash(deployment: str) -> str:
    # A stable stand-in for the controller's hash of the pod template.
    return hashlib.sha256(deployment.encode()).hexdigest()[:10]


def pod_object(
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    ip: str | None,
    phase: str = "Running",
    metrics_port: int | str | None = None,
    workers: int | str | None = None,
    deployment: str | None = None,
    deleting: bool = False,
) -> JsonObject:
    """Pod JSON as the API server returns it, with the fields discovery reads and a few more."""
    labels = dict(labels)
    metadata: JsonObject = {"name": name, "namespace": namespace, "labels": labels}
    annotations = {}
    if metrics_port is not None:
        annotations[METRICS_PORT_ANNOTATION] = str(metrics_port)
    if workers is not None:
        annotations[WORKERS_ANNOTATION] = str(workers)
    if annotations:
        metadata["annotations"] = annotations
    if deployment is not None:
        template_hash = _template_hash(deployment)
        labels["pod-template-hash"] = template_hash
        metadata["generateName"] = f"{deployment}-{template_hash}-"
        metadata["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": f"{deployment}-{template_hash}",
                "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{namespace}.{deployment}")),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:05:00Z"
        metadata["deletionGracePeriodSeconds"] = 30
    pod_status: JsonObject = {"phase": phase, "hostIP": "10.0.0.1", "qosClass": "Burstable"}
    if ip is not None:
        pod_status["podIP"] = ip
        pod_status["podIPs"] = [{"ip": ip}]
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": metadata,
        "spec": {
            "containers": [{"name": "push", "image": "pushscale:dev"}],
            "nodeName": "node-1",
            "serviceAccountName": "default",
        },
        "status": pod_status,
    }


def service_object(namespace: str, name: str, selector: Mapping[str, str] | None) -> JsonObject:
    spec: JsonObject = {"type": "ClusterIP", "ports": [{"name": "http", "port": 80}]}
    if selector is not None:
        spec["selector"] = dict(selector)
    return {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def config_map_object(namespace: str, name: str, data: Mapping[str, str]) -> JsonObject:
    return {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(data),
    }


def deployment_object(
    namespace: str, name: str, replicas: int, match_labels: Mapping[str, str]
) -> JsonObject:
    return {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": name, "namespace": namespace, "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(match_labels)},
            "template": {
                "metadata": {"labels": dict(match_labels)},
                "spec": {"containers": [{"name": "push", "image": "pushscale:dev"}]},
            },
        },
        "status": {"replicas": replicas, "readyReplicas": replicas},
    }
