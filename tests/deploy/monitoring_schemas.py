"""Schemas of the Prometheus Operator kinds in deploy/monitoring (monitoring.coreos.com/v1).

Their CRDs are not installed in the test control plane and kubernetes-validate does not know
them, so deploy/monitoring is validated against these: the subset of the operator's v1 API
that the examples use, written from its API reference, strict (an unknown or misspelt field is
an error) so that a typo cannot ship.
"""

from __future__ import annotations

from typing import Any, Final

GROUP_VERSION: Final = ("monitoring.coreos.com", "v1")

_STRING: Final = {"type": "string"}
_MAP: Final = {"type": "object", "additionalProperties": _STRING}
_DURATION: Final = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?)$",
}


def _strict(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


_SELECTOR: Final = _strict(
    {
        "matchLabels": _MAP,
        "matchExpressions": {
            "type": "array",
            "items": _strict(
                {
                    "key": _STRING,
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": _STRING},
                },
                ("key", "operator"),
            ),
        },
    }
)
_NAMESPACES: Final = _strict(
    {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": _STRING}}
)
_RELABELING: Final = _strict(
    {
        "sourceLabels": {
            "type": "array",
            "items": {"type": "string", "pattern": r"^[a-zA-Z_]\w*$"},
        },
        "separator": _STRING,
        "targetLabel": _STRING,
        "regex": _STRING,
        "modulus": {"type": "integer"},
        "replacement": _STRING,
        "action": {
            "enum": [
                "replace",
                "keep",
                "drop",
                "hashmod",
                "labelmap",
                "labeldrop",
                "labelkeep",
                "lowercase",
                "uppercase",
                "keepequal",
                "dropequal",
            ]
        },
    }
)
_ENDPOINT_FIELDS: Final = {
    "port": _STRING,
    "path": _STRING,
    "scheme": {"enum": ["http", "https"]},
    "interval": _DURATION,
    "scrapeTimeout": _DURATION,
    "honorLabels": {"type": "boolean"},
    "relabelings": {"type": "array", "items": _RELABELING},
    "metricRelabelings": {"type": "array", "items": _RELABELING},
}


def _monitor(kind: str, endpoints: str, endpoint: dict[str, Any]) -> dict[str, Any]:
    spec = _strict(
        {
            "selector": _SELECTOR,
            "namespaceSelector": _NAMESPACES,
            endpoints: {"type": "array", "items": endpoint, "minItems": 1},
            "jobLabel": _STRING,
            "podTargetLabels": {"type": "array", "items": _STRING},
            "sampleLimit": {"type": "integer", "minimum": 0},
        },
        ("selector", endpoints),
    )
    return _strict(
        {
            "apiVersion": {"const": "/".join(GROUP_VERSION)},
            "kind": {"const": kind},
            "metadata": {"type": "object"},
            "spec": spec,
        },
        ("apiVersion", "kind", "metadata", "spec"),
    )


_RULE: Final = {
    **_strict(
        {
            "alert": _STRING,
            "record": _STRING,
            "expr": {"type": ["string", "integer"]},
            "for": _DURATION,
            "keep_firing_for": _DURATION,
            "labels": _MAP,
            "annotations": _MAP,
        },
        ("expr",),
    ),
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
}
_RULES: Final = _strict(
    {
        "apiVersion": {"const": "/".join(GROUP_VERSION)},
        "kind": {"const": "PrometheusRule"},
        "metadata": {"type": "object"},
        "spec": _strict(
            {
                "groups": {
                    "type": "array",
                    "items": _strict(
                        {
                            "name": {"type": "string", "minLength": 1},
                            "interval": _DURATION,
                            "rules": {"type": "array", "items": _RULE},
                        },
                        ("name",),
                    ),
                }
            },
            ("groups",),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)

SCHEMAS: Final[dict[tuple[str, str, str], dict[str, Any]]] = {
    (*GROUP_VERSION, "ServiceMonitor"): _monitor(
        "ServiceMonitor",
        "endpoints",
        _strict({**_ENDPOINT_FIELDS, "targetPort": {"type": ["string", "integer"]}}),
    ),
    (*GROUP_VERSION, "PodMonitor"): _monitor(
        "PodMonitor", "podMetricsEndpoints", _strict(_ENDPOINT_FIELDS)
    ),
    (*GROUP_VERSION, "PrometheusRule"): _RULES,
}
"""Whole-object schemas (with apiVersion, kind and metadata), by (group, version, kind)."""
