"""A loopback HTTP server that speaks the part of the KFP v2beta1 REST API that flywheel uses.

This is a CONTRACT test double, not a cluster: it checks each request the way the KFP API server would
(paths, methods, required fields, the pipeline spec parses into the PipelineSpec/PlatformSpec protos, a
recurring run's cron has 6 fields), answers with the shapes kfp_server_api decodes, and records every
request so tests can assert on them. It binds 127.0.0.1 only.
"""

from __future__ import annotations

import email
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

API = "/apis/v2beta1"


class ContractError(Exception):
    pass


def check_pipeline_spec(spec: dict) -> pipeline_spec_pb2.PipelineSpec:
    """What the API server does with a run's pipeline_spec: parse it (and its platform spec) as protos."""
    if "pipeline_spec" in spec:  # kfp.Client wraps IR + platform spec when there is a platform spec
        json_format.ParseDict(spec["platform_spec"], pipeline_spec_pb2.PlatformSpec())
        spec = spec["pipeline_spec"]
    return json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())


class KfpContract:
    def __init__(self):
        self.requests: list[dict] = []
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}
        self.recurring: dict[str, dict] = {}
        self.uploads: list[str] = []  # raw YAML of uploaded packages
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()

    def raw(self) -> str:
        """Everything clients sent (headers and bodies), to search for things that must not be there."""
        return "\n".join(json.dumps(r, default=str) for r in self.requests)

    # --- request handling ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict, headers: dict, body: bytes) -> tuple[int, dict]:
        q = {k: v[0] for k, v in query.items()}
        ctype = headers.get("Content-Type", "")
        data = json.loads(body) if body and ctype.startswith("application/json") else None
        self.requests.append({"method": method, "path": path, "query": q, "headers": headers,
                              "body": data if data is not None else body.decode("utf-8", "replace")})
        route = (method, path[len(API):] if path.startswith(API) else None)
        if route == ("GET", "/healthz"):
            return 200, {"multi_user": False}
        if route == ("GET", "/experiments"):
            return 200, {"experiments": self._filter(self.experiments.values(), q)}
        if route == ("POST", "/experiments"):
            self._require(data, "display_name")
            e = {**data, "experiment_id": str(uuid.uuid4()), "storage_state": "AVAILABLE"}
            self.experiments[e["experiment_id"]] = e
            return 200, e
        if route == ("POST", "/runs"):
            self._require(data, "display_name", "experiment_id")
            if data["experiment_id"] not in self.experiments:
                raise ContractError(f"experiment {data['experiment_id']} does not exist")
            if "pipeline_spec" in data:
                check_pipeline_spec(data["pipeline_spec"])
            elif "pipeline_version_reference" not in data:
                raise ContractError("a run needs pipeline_spec or pipeline_version_reference")
            r = {**data, "run_id": str(uuid.uuid4()), "state": "PENDING"}
            self.runs[r["run_id"]] = r
            return 200, r
        if route == ("GET", "/runs"):
            runs = [r for r in self.runs.values() if r["experiment_id"] == q.get("experiment_id", r["experiment_id"])]
            return 200, {"runs": self._filter(runs, q), "total_size": len(runs)}
        if route == ("GET", "/pipelines"):
            return 200, {"pipelines": self._filter(self.pipelines.values(), q)}
        if route == ("POST", "/pipelines/upload"):
            spec = self._package(headers, body)
            if any(p["display_name"] == q["name"] for p in self.pipelines.values()):
                raise ContractError(f"a pipeline named {q['name']!r} exists")
            p = {"pipeline_id": str(uuid.uuid4()), "display_name": q["name"], "description": q.get("description")}
            self.pipelines[p["pipeline_id"]] = p
            self._version(p["pipeline_id"], q["name"], spec)  # the backend makes a first version too
            return 200, p
        if route == ("POST", "/pipelines/upload_version"):
            spec = self._package(headers, body)
            if q.get("pipelineid") not in self.pipelines:
                raise ContractError(f"pipeline {q.get('pipelineid')} does not exist")
            return 200, self._version(q["pipelineid"], q["name"], spec)
        if route == ("POST", "/recurringruns"):
            self._require(data, "display_name", "experiment_id", "trigger", "pipeline_version_reference")
            cron = data["trigger"].get("cron_schedule", {}).get("cron", "")
            if len(cron.split()) != 6:
                raise ContractError(f"cron {cron!r} must have 6 fields")
            ref = data["pipeline_version_reference"]
            if ref.get("pipeline_version_id") not in self.versions:
                raise ContractError("unknown pipeline version")
            j = {**data, "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED"}
            self.recurring[j["recurring_run_id"]] = j
            return 200, j
        return 404, {"error": f"no route {method} {path}", "code": 5}

    def _version(self, pipeline_id: str, name: str, spec) -> dict:
        v = {"pipeline_id": pipeline_id, "pipeline_version_id": str(uuid.uuid4()), "display_name": name,
             "pipeline_spec": json_format.MessageToDict(spec)}
        self.versions[v["pipeline_version_id"]] = v
        return v

    def _package(self, headers: dict, body: bytes):
        msg = email.message_from_bytes(f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body)
        files = [p for p in msg.get_payload() if p.get_param("name", header="content-disposition") == "uploadfile"]
        if len(files) != 1:
            raise ContractError("upload needs exactly one multipart field 'uploadfile'")
        text = files[0].get_payload(decode=True).decode()
        self.uploads.append(text)
        docs = list(yaml.safe_load_all(text))
        return check_pipeline_spec({"pipeline_spec": docs[0], "platform_spec": docs[1]} if len(docs) > 1 else docs[0])

    @staticmethod
    def _require(data, *fields):
        missing = [f for f in fields if not (data or {}).get(f)]
        if missing:
            raise ContractError(f"missing field(s) {', '.join(missing)}")

    @staticmethod
    def _filter(items, q) -> list:
        items = list(items)
        if "filter" in q:
            for p in json.loads(q["filter"])["predicates"]:
                if p["operation"] not in ("EQUALS", 1):  # filter.proto: EQUALS = 1, sent as name or number
                    raise ContractError(f"filter operation {p['operation']!r} is not supported here")
                items = [i for i in items if i.get(p["key"]) == p["stringValue"]]
        return items

    def _handler(self):
        contract = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method):
                url = urlparse(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    status, payload = contract.handle(method, url.path, parse_qs(url.query), dict(self.headers), body)
                except (ContractError, json_format.ParseError, KeyError) as err:
                    status, payload = 400, {"error": str(err), "code": 3}
                except Exception as err:  # a bug here must fail the test loudly, not drop the connection
                    status, payload = 500, {"error": f"{type(err).__name__}: {err}", "code": 13}
                out = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def log_message(self, *args):
                pass

        return Handler
