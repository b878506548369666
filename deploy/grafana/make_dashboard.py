"""Writes deploy/grafana/citadel-dashboard.json (the committed file is its output; edit here, then run
`python3 deploy/grafana/make_dashboard.py > deploy/grafana/citadel-dashboard.json`). tests/system/test_metrics.py
checks that every query names a metric the server exports (the citadel:embedding_* ones against a server with an
embedding model, in tests/system/test_embeddings.py)."""
import json
ds = {"type": "prometheus", "uid": "${datasource}"}
sel = 'instance=~"$instance"'
msel = 'instance=~"$instance", model_name=~"$model_name"'
R = "$__rate_interval"
panels = []
y = [0]
def row(title):
    panels.append({"type": "row", "title": title, "collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y[0]},
                   "id": len(panels) + 1, "panels": []})
    y[0] += 1
def ts(title, targets, unit="short", x=0, w=12, h=8, desc=""):
    panels.append({"type": "timeseries", "title": title, "description": desc, "datasource": ds,
                   "gridPos": {"h": h, "w": w, "x": x, "y": y[0]}, "id": len(panels) + 1,
                   "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                   "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                   "targets": [{"datasource": ds, "expr": e, "legendFormat": l, "refId": chr(65 + i)}
                               for i, (e, l) in enumerate(targets)]})
    if x + w >= 24: y[0] += h
def stat(title, expr, unit="short", x=0, w=6, h=4):
    panels.append({"type": "stat", "title": title, "datasource": ds, "gridPos": {"h": h, "w": w, "x": x, "y": y[0]},
                   "id": len(panels) + 1, "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                   "targets": [{"datasource": ds, "expr": expr, "refId": "A"}]})
    if x + w >= 24: y[0] += h
def q(h, metric, extra=""):
    return f'histogram_quantile({h}, sum by (le) (rate({metric}_bucket{{{msel}{extra}}}[{R}])))'

row("Overview")
stat("Requests running", f'sum(citadel:num_requests_running{{{msel}}})', x=0)
stat("Requests waiting", f'sum(citadel:num_requests_waiting{{{msel}}})', x=6)
stat("Uptime", f'max(citadel:process_uptime_seconds{{{sel}}})', unit="s", x=12)
stat("Build", f'count by (version, commit) (citadel:build_info{{{sel}}})', x=18)
row("Requests")
ts("Requests per second by route", [(f'sum by (route) (rate(citadel:http_requests_total{{{sel}}}[{R}]))', "{{route}}")],
   unit="reqps")
ts("Responses per second by status", [(f'sum by (status) (rate(citadel:http_requests_total{{{sel}}}[{R}]))', "{{status}}")],
   unit="reqps", x=12)
ts("Running and waiting", [(f'sum(citadel:num_requests_running{{{msel}}})', "running"),
                           (f'sum(citadel:num_requests_waiting{{{msel}}})', "waiting")])
ts("Finished requests by reason", [(f'sum by (finished_reason) (rate(citadel:request_success_total{{{msel}}}[{R}]))',
                                    "{{finished_reason}}"),
                                   (f'sum(rate(citadel:engine_request_errors_total{{{msel}}}[{R}]))', "engine error"),
                                   (f'sum by (reason) (rate(citadel:engine_rejected_total{{{msel}}}[{R}]))',
                                    "rejected {{reason}}")], unit="reqps", x=12)
row("Latency")
ts("Time to first token", [(q(p, "citadel:time_to_first_token_seconds"), f"p{int(p*100)}") for p in (0.5, 0.95, 0.99)],
   unit="s", desc="Admission to first token (engine timestamps). Alert: p95 > 150 ms warning, > 300 ms critical.")
ts("Inter-token latency", [(q(p, "citadel:inter_token_latency_seconds"), f"p{int(p*100)}") for p in (0.5, 0.95, 0.99)],
   unit="s", x=12, desc="Between consecutive tokens of one request. Alert: p95 > 150 ms warning, > 300 ms critical.")
ts("End-to-end request latency", [(q(p, "citadel:e2e_request_latency_seconds"), f"p{int(p*100)}") for p in (0.5, 0.95, 0.99)],
   unit="s")
ts("Queue time and HTTP latency (p95)", [(q(0.95, "citadel:request_queue_time_seconds"), "queue p95"),
                                        (f'histogram_quantile(0.95, sum by (le, route) (rate(citadel:http_request_duration_seconds_bucket{{{sel}}}[{R}])))',
                                         "http {{route}} p95")], unit="s", x=12)
row("Tokens")
ts("Tokens per second", [(f'sum(rate(citadel:prompt_tokens_total{{{msel}}}[{R}]))', "prompt"),
                         (f'sum(rate(citadel:generation_tokens_total{{{msel}}}[{R}]))', "generation")])
ts("Prefix cache hit rate", [(f'sum(rate(citadel:prefix_cache_hits_total{{{msel}}}[{R}])) / sum(rate(citadel:prefix_cache_queries_total{{{msel}}}[{R}]))',
                              "hit rate")], unit="percentunit", x=12)
row("Embeddings")
ts("Embedding throughput", [(f'sum by (model_name) (rate(citadel:embedding_requests_total{{{msel}}}[{R}]))', "{{model_name}} requests"),
                            (f'sum by (model_name) (rate(citadel:embedding_inputs_total{{{msel}}}[{R}]))', "{{model_name}} inputs"),
                            (f'sum by (model_name) (rate(citadel:embedding_batches_total{{{msel}}}[{R}]))', "{{model_name}} runner calls")],
   unit="ops", w=8, desc="Per second: /v1/embeddings requests, their inputs (sentences) and the runner calls they share.")
ts("Embedding tokens per second", [(f'sum by (model_name) (rate(citadel:embedding_tokens_total{{{msel}}}[{R}]))', "{{model_name}}")],
   x=8, w=8, desc="Tokens embedded, special tokens included (as usage.prompt_tokens counts them).")
ts("Embedding queue", [(f'sum by (model_name) (citadel:embedding_requests_running{{{msel}}})', "{{model_name}} running"),
                       (f'sum by (model_name) (citadel:embedding_requests_waiting{{{msel}}})', "{{model_name}} waiting")],
   x=16, w=8, desc="Requests in the runner call now and queued behind it (a full queue answers 429).")
ts("Embedding latency", [(q(p, "citadel:embedding_request_latency_seconds"), f"p{int(p*100)}") for p in (0.5, 0.95, 0.99)]
   + [(q(0.95, "citadel:embedding_queue_time_seconds"), "queue p95")], unit="s", w=8,
   desc="Submit to completion; queue: submit to the start of the request's runner call.")
ts("Embedding batch size", [(q(p, "citadel:embedding_batch_size"), f"p{int(p*100)}") for p in (0.5, 0.95)]
   + [(f'sum(rate(citadel:embedding_inputs_total{{{msel}}}[{R}])) / sum(rate(citadel:embedding_batches_total{{{msel}}}[{R}]))',
       "mean")], x=8, w=8, desc="Inputs per embedding runner call (concurrent requests share one call).")
ts("Embedding failures", [(f'sum(rate(citadel:embedding_request_errors_total{{{msel}}}[{R}]))', "runner error"),
                          (f'sum(rate(citadel:embedding_cancelled_total{{{msel}}}[{R}]))', "cancelled"),
                          (f'sum by (reason) (rate(citadel:embedding_rejected_total{{{msel}}}[{R}]))', "rejected {{reason}}")],
   unit="reqps", x=16, w=8)
row("KV cache and GPU")
ts("KV cache usage", [(f'citadel:kv_cache_usage_perc{{{msel}}}', "{{model_name}}")], unit="percentunit",
   desc="Alert above 95 % for 5 minutes.")
ts("Preemptions per second", [(f'sum(rate(citadel:num_preemptions_total{{{msel}}}[{R}]))', "preemptions")], x=12)
ts("GPU utilisation", [(f'citadel:gpu_utilization_perc{{{sel}}}', "gpu {{gpu}}")], unit="percentunit",
   desc="From NVML (libnvidia-ml loaded at run time; empty on hosts without an NVIDIA GPU). Alert > 85 % / > 95 %.")
ts("GPU and host memory", [(f'citadel:gpu_memory_usage_perc{{{sel}}}', "gpu {{gpu}}"),
                           (f'citadel:host_memory_usage_perc{{{sel}}}', "host")], unit="percentunit", x=12,
   desc="GPU memory from NVML (used / total per device). Alert > 80 % / > 90 %.")
row("Errors and quotas")
ts("Failures per second by reason", [(f'sum by (reason) (rate(citadel:request_failures_total{{{sel}}}[{R}]))', "{{reason}}")],
   unit="reqps")
ts("Inference failure rate", [(f'sum(rate(citadel:request_failures_total{{{sel}, route=~"/v1/chat/completions|/v1/completions|/api/v1/infer", reason!="client_disconnected"}}[{R}])) / sum(rate(citadel:http_requests_total{{{sel}, route=~"/v1/chat/completions|/v1/completions|/api/v1/infer"}}[{R}]))',
                               "failure rate")], unit="percentunit", x=12, desc="Alert above 5 % for 5 minutes.")
ts("Tokens per second by tenant", [(f'sum by (tenant) (rate(citadel:tenant_prompt_tokens_total{{{sel}}}[{R}]))', "{{tenant}} prompt"),
                                   (f'sum by (tenant) (rate(citadel:tenant_generation_tokens_total{{{sel}}}[{R}]))', "{{tenant}} generation")])
ts("Quota and rate-limit rejections", [(f'sum by (reason) (rate(citadel:request_failures_total{{{sel}, reason=~"quota|rate_limited|busy"}}[{R}]))',
                                        "{{reason}}")], unit="reqps", x=12)
row("Process, audit, keys")
ts("Resident memory", [(f'citadel:process_resident_memory_bytes{{{sel}}}', "{{instance}}")], unit="bytes", w=8)
ts("Open file descriptors", [(f'citadel:process_open_fds{{{sel}}}', "open"), (f'citadel:process_max_fds{{{sel}}}', "limit")],
   x=8, w=8)
ts("Connections", [(f'citadel:http_connections_open{{{sel}}}', "open")], x=16, w=8)
ts("Audit log", [(f'citadel:audit_queue_depth{{{sel}}}', "queue depth"),
                 (f'increase(citadel:audit_write_failures_total{{{sel}}}[{R}])', "write failures")])
ts("Oldest active API key", [(f'citadel:api_key_oldest_age_seconds{{{sel}}} / 86400', "days")], unit="d", x=12,
   desc="Alert above 90 days.")

# Chat models (engine series) and embedding models (citadel:embedding_*) alike.
models_query = 'label_values({__name__=~"citadel:num_requests_running|citadel:embedding_requests_running"}, model_name)'
dash = {
    "title": "Citadel", "uid": "citadel-overview", "schemaVersion": 39, "version": 1, "editable": True,
    "tags": ["citadel", "llm"], "time": {"from": "now-1h", "to": "now"}, "refresh": "30s",
    "description": "Citadel LLM server: requests, latency percentiles, tokens/s, embeddings, KV and GPU use, errors, "
                   "quotas "
                   "(docs/OPERATIONS.md). Metric names follow vLLM's under the citadel: prefix.",
    "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
        {"name": "instance", "type": "query", "datasource": ds, "label": "Instance", "includeAll": True, "multi": True,
         "allValue": ".*", "query": {"query": "label_values(citadel:build_info, instance)", "refId": "I"},
         "definition": "label_values(citadel:build_info, instance)", "refresh": 2},
        {"name": "model_name", "type": "query", "datasource": ds, "label": "Model", "includeAll": True, "multi": True,
         "allValue": ".*", "query": {"query": models_query, "refId": "M"}, "definition": models_query, "refresh": 2}]},
    "annotations": {"list": []},
    "panels": panels,
}
print(json.dumps(dash, indent=2))
