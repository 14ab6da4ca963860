"""adapter.openapi: valid Swagger 2.0 and OpenAPI 3.0, the Go types' fields, discovery's paths."""

from __future__ import annotations

import hashlib
import re

import pytest
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from openapi_spec_validator import OpenAPIV2SpecValidator, OpenAPIV30SpecValidator, validate
from starlette.responses import JSONResponse

from adapter import openapi, wire
from adapter.catalog import METRIC_NAMES
from adapter.selectors import parse_selector

METRICS = ("socket_io_connected", "socket_io_connect")
NOW = 1795680000.0  # 2026-11-26T08:00:00Z
CORE = "io.k8s.api.core.v1."
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
METRICS_API = "io.k8s.metrics.pkg.apis.custom_metrics."
EVERY_METRIC_LIST = pytest.mark.parametrize(
    "metrics", [METRIC_NAMES, METRICS, ()], ids=["catalog", "two", "none"]
)


@EVERY_METRIC_LIST
def test_v2_is_valid_swagger_2(metrics):
    validate(openapi.openapi_v2(metrics), cls=OpenAPIV2SpecValidator)


@EVERY_METRIC_LIST
@pytest.mark.parametrize("version", wire.VERSIONS)
def test_v3_is_valid_openapi_3_0(version, metrics):
    document = openapi.openapi_v3(version, metrics)
    assert document["openapi"] == "3.0.0"
    validate(document, cls=OpenAPIV30SpecValidator)


# The metric types' fields, transcribed from k8s.io/metrics/pkg/apis/custom_metrics/{v1beta1,
# v1beta2}/types.go: json name -> JSON type ("[]T" arrays, "{}T" maps, else a definition), and
# the required ones as openapi-gen marks them (no omitempty, no +optional).
GO_METRIC_TYPES = {
    "v1beta1.MetricValueList": (
        {"kind": "string", "apiVersion": "string", "metadata": META + "ListMeta",
         "items": f"[]{METRICS_API}v1beta1.MetricValue"},
        ["items"],
    ),
    "v1beta1.MetricValue": (
        {"kind": "string", "apiVersion": "string", "describedObject": CORE + "ObjectReference",
         "metricName": "string", "timestamp": META + "Time", "window": "integer/int64",
         "value": QUANTITY, "selector": META + "LabelSelector"},
        ["describedObject", "metricName", "timestamp", "value"],
    ),
    "v1beta2.MetricValueList": (
        {"kind": "string", "apiVersion": "string", "metadata": META + "ListMeta",
         "items": f"[]{METRICS_API}v1beta2.MetricValue"},
        ["items"],
    ),
    "v1beta2.MetricValue": (
        {"kind": "string", "apiVersion": "string", "describedObject": CORE + "ObjectReference",
         "metric": METRICS_API + "v1beta2.MetricIdentifier", "timestamp": META + "Time",
         "windowSeconds": "integer/int64", "value": QUANTITY},
        ["describedObject", "metric", "timestamp", "value"],
    ),
    "v1beta2.MetricIdentifier": (
        {"name": "string", "selector": META + "LabelSelector"},
        ["name"],
    ),
}  # fmt: skip


def json_type(schema):
    """A property's schema in GO_METRIC_TYPES' notation, the same for Swagger 2.0 and 3.0."""
    if "allOf" in schema:  # 3.0's wrapper around a $ref with a description
        [schema] = schema["allOf"]
    if "$ref" in schema:
        return schema["$ref"].rpartition("/")[2]
    if schema["type"] == "array":
        return "[]" + json_type(schema["items"])
    if schema["type"] == "object":
        return "{}" + json_type(schema["additionalProperties"])
    return "/".join(filter(None, (schema["type"], schema.get("format"))))


def v2_definitions():
    return openapi.openapi_v2(METRICS)["definitions"]


def v3_schemas(version):
    return openapi.openapi_v3(version, METRICS)["components"]["schemas"]


@pytest.mark.parametrize("name", list(GO_METRIC_TYPES))
@pytest.mark.parametrize("source", ["v2", "v3"])
def test_the_metric_types_have_the_go_types_fields(name, source):
    fields, required = GO_METRIC_TYPES[name]
    version = name.partition(".")[0]
    definitions = v2_definitions() if source == "v2" else v3_schemas(version)
    definition = definitions[METRICS_API + name]
    assert {field: json_type(s) for field, s in definition["properties"].items()} == fields
    assert definition["required"] == required


@pytest.mark.parametrize("version", wire.VERSIONS)
def test_v3_documents_hold_only_their_own_versions_types(version):
    other = next(v for v in wire.VERSIONS if v != version)
    names = v3_schemas(version)
    assert METRICS_API + version + ".MetricValueList" in names
    assert not [name for name in names if name.startswith(METRICS_API + other)]


@pytest.mark.parametrize(
    "name", [METRICS_API + "v1beta1.MetricValue", METRICS_API + "v1beta2.MetricIdentifier"]
)
def test_selectors_are_nullable_as_go_writes_null_for_everything(name):
    version = name.removeprefix(METRICS_API).partition(".")[0]
    assert v3_schemas(version)[name]["properties"]["selector"]["nullable"] is True


@pytest.mark.parametrize("version", wire.VERSIONS)
def test_the_list_kinds_carry_their_group_version_kind(version):
    for definitions in (v2_definitions(), v3_schemas(version)):
        definition = definitions[f"{METRICS_API}{version}.MetricValueList"]
        assert definition["x-kubernetes-group-version-kind"] == [
            {"group": wire.GROUP, "kind": "MetricValueList", "version": version}
        ]


def schema_validator(version, name):
    """An OpenAPI 3.0 validator for one of the version's component schemas."""
    components = openapi.openapi_v3(version, METRICS)["components"]
    schema = {"$ref": f"#/components/schemas/{name}", "components": components}
    return OAS30Validator(schema, format_checker=oas30_format_checker)


@pytest.mark.parametrize("version", wire.VERSIONS)
def test_the_documents_wire_writes_match_the_schemas(version):
    rate = wire.Value(
        wire.Described("pods", "push-a", "live"), "socket_io_connect", 1.5, NOW, window_seconds=60
    )
    namespace = wire.Value(wire.Described("namespaces", "live"), "socket_io_connected", 8285, NOW)
    selector = parse_selector("event=joinByGameId,reason in (a,b),!canary")
    documents = {
        f"{METRICS_API}{version}.MetricValueList": wire.metric_value_list(
            version, [rate, namespace], selector
        ),
        META + "APIResourceList": wire.api_resource_list(version, METRICS),
        META + "Status": wire.status(404, "gone", {"name": "socket_io_connected"}),
    }
    for name, document in documents.items():
        errors = [error.message for error in schema_validator(version, name).iter_errors(document)]
        assert errors == [], name
    # Go writes null for the everything-selector. `nullable` beside the allOf says so to client
    # generators, but OpenAPI 3.0.3's strict reading (nullable only beside a type) rejects it:
    # that is the one disagreement.
    everything = wire.metric_value_list(version, [rate], parse_selector(None))
    validator = schema_validator(version, f"{METRICS_API}{version}.MetricValueList")
    rejected = {error.absolute_path[-1] for error in validator.iter_errors(everything)}
    assert rejected == {"selector"}


METRIC_PATH = re.compile(
    r"/apis/custom\.metrics\.k8s\.io/(?P<version>[^/]+)/namespaces/\{namespace\}/"
    r"(?:(?P<resource>[^/]+)/(?P<name>\{name\}|\*)|metrics)/(?P<metric>[^/{}*]+)"
)
DISCOVERY_PATHS = {
    "/apis/custom.metrics.k8s.io/",
    "/apis/custom.metrics.k8s.io/v1beta1/",
    "/apis/custom.metrics.k8s.io/v1beta2/",
}


def metric_paths(document):
    """(path, version, resource list name, namespaced, by name) for every metric path."""
    found = []
    for path in document["paths"].keys() - DISCOVERY_PATHS:
        match = METRIC_PATH.fullmatch(path)
        assert match, f"{path} is neither discovery nor a metric path"
        resource = match["resource"] or "namespaces"
        name = f"{resource}/{match['metric']}"
        by_name = match["name"] != "*"
        found.append((path, match["version"], name, match["resource"] is not None, by_name))
    return found


def test_every_metric_path_is_a_resource_discovery_lists_and_back():
    document = openapi.openapi_v2(METRICS)
    assert DISCOVERY_PATHS <= document["paths"].keys()
    found = metric_paths(document)
    for version in wire.VERSIONS:
        listed = wire.api_resource_list(version, METRICS)["resources"]
        resources = {(r["name"], r["namespaced"]) for r in listed}
        in_version = [entry for entry in found if entry[1] == version]
        assert {(name, namespaced) for _, _, name, namespaced, _ in in_version} == resources
        by_name = {(name, namespaced) for _, _, name, namespaced, named in in_version if named}
        assert by_name == resources  # each object kind can be asked for one by name


def test_lists_are_described_for_pods_only_with_a_label_selector():
    document = openapi.openapi_v2(METRICS)
    lists = [entry for entry in metric_paths(document) if not entry[4]]
    assert {name.partition("/")[0] for _, _, name, _, _ in lists} == openapi.LISTED
    for path, *_ in lists:
        parameters = {p["name"] for p in document["paths"][path]["get"]["parameters"]}
        assert parameters == {"namespace", "labelSelector", "metricLabelSelector"}


@pytest.mark.parametrize("source", ["v2", "v1beta1", "v1beta2"])
def test_metric_operations_are_gets_of_their_versions_list(source):
    if source == "v2":
        document, refs = openapi.openapi_v2(METRICS), "#/definitions/"
    else:
        document, refs = openapi.openapi_v3(source, METRICS), "#/components/schemas/"
    found = metric_paths(document)
    assert found
    for path, version, *_ in found:
        operation = document["paths"][path]["get"]
        assert operation["x-kubernetes-action"] == "get"
        assert operation["x-kubernetes-group-version-kind"] == {
            "group": wire.GROUP, "version": version, "kind": "MetricValueList",
        }  # fmt: skip
        ok = operation["responses"]["200"]
        schema = ok["schema"] if source == "v2" else ok["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"{refs}{METRICS_API}{version}.MetricValueList"}
        assert "metricLabelSelector" in {p["name"] for p in operation["parameters"]}


def served_hash(version, metrics):
    # What the API layer serves; byte for byte what Starlette's JSONResponse (the stdlib's
    # encoder) writes, so the hash names the document whoever renders it.
    body = wire.render(openapi.openapi_v3(version, metrics))
    assert body == JSONResponse(openapi.openapi_v3(version, metrics)).body
    return hashlib.sha512(body).hexdigest().upper()


def test_the_v3_index_points_at_each_version_with_the_served_documents_hash():
    index = openapi.openapi_v3_index(METRICS)
    assert index == {
        "paths": {
            f"apis/custom.metrics.k8s.io/{version}": {
                "serverRelativeURL": f"/openapi/v3/apis/custom.metrics.k8s.io/{version}"
                f"?hash={served_hash(version, METRICS)}"
            }
            for version in wire.VERSIONS
        }
    }
    assert openapi.openapi_v3_index(METRICS) == index  # stable: clients may cache for good
    assert openapi.openapi_v3_index(METRICS[:1]) != index  # and it moves with the document


def test_unknown_versions_are_refused():
    with pytest.raises(ValueError):
        openapi.openapi_v3("v1", METRICS)
