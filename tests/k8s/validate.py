#!/usr/bin/env python3
"""Reads `kubectl kustomize` output (YAML documents) on stdin.

    validate.py --json                 prints the documents as one JSON array (needs PyYAML)
    validate.py --kubernetes 1.32.0    validates every document offline, exit 1 on any error

Validation: every built-in kind against the schemas bundled with PyPI's
kubernetes-validate for that Kubernetes version, strictly (unknown fields
are errors); cert-manager's Certificate and the Prometheus operator's
PodMonitor, which those schemas lack, against hand-written subsets of their
CRDs beside this file (certificate-cert-manager-v1.schema.json,
podmonitor-monitoring-coreos-v1.schema.json). Any other kind
is an error, never a skipped warning. Nothing here touches the network.
Used by tests/deploy_k8s.rs.
"""

import json
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
CRD_SCHEMAS = {
    ("cert-manager.io/v1", "Certificate"): "certificate-cert-manager-v1.schema.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring-coreos-v1.schema.json",
}


def documents():
    return [doc for doc in yaml.safe_load_all(sys.stdin.read()) if doc]


def validate(docs, version):
    import jsonschema
    import kubernetes_validate
    from kubernetes_validate import utils

    failures = 0
    for doc in docs:
        name = "%s/%s" % (doc.get("kind"), doc.get("metadata", {}).get("name"))
        crd = CRD_SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
        try:
            if crd is not None:
                with open(os.path.join(HERE, crd)) as f:
                    schema = json.load(f)
                jsonschema.Draft202012Validator(schema).validate(doc)
                checked = "%s schema subset" % doc.get("apiVersion")
            else:
                checked = "Kubernetes %s" % kubernetes_validate.validate(doc, version, strict=True)
        except utils.SchemaNotFoundError as e:
            print("ERROR %s: no schema: %s" % (name, e.message))
            failures += 1
            continue
        except (jsonschema.ValidationError, utils.ValidationError) as e:
            path = ".".join(str(p) for p in e.path)
            print("ERROR %s: %s: %s" % (name, path, e.message))
            failures += 1
            continue
        print("ok %s (%s)" % (name, checked))
    return failures


def main():
    args = sys.argv[1:]
    if args == ["--json"]:
        json.dump(documents(), sys.stdout)
        return 0
    if len(args) == 2 and args[0] == "--kubernetes":
        docs = documents()
        if not docs:
            print("ERROR: no documents on stdin")
            return 1
        return 1 if validate(docs, args[1]) else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
