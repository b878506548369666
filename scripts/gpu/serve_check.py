#!/usr/bin/env python3
"""`citadel serve --device cuda` end to end on the GPU machine (stdlib only): a synthetic DeepSeek-V3-shaped model
(MLA + MoE, `citadel synth --preset deepseek3-tiny`, bf16) served with the default KV budget (kv_memory_mb 0: the pool
is sized from the card), then the same file on the CPU; each answers the same greedy chat request. Prints the KV pool
line, both answers and whether they agree, and writes $OUT/serve_check.json."""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.environ.get("CITADEL_BIN", "build-gpu/citadel")
OUT = os.environ.get("OUT", "/tmp")


def serve(model, device, port, data_dir):
    p = subprocess.Popen([BIN, "serve", "--model", model, "--device", device, "--port", str(port), "--data-dir",
                          data_dir, "--served-model-name", "ds3", "--max-context", "1024"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    key, lines, deadline = None, [], time.time() + 120
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        m = re.search(r"admin API key \(shown once, store it now\): (\S+)", line)
        key = m.group(1) if m else key
        if "citadel serve: ready" in line:
            return p, key, lines
    p.kill()
    sys.exit("server did not start:\n" + "\n".join(lines[-30:]))


def chat(port, key, n):
    body = json.dumps({"model": "ds3", "messages": [{"role": "user", "content": "Tell me about latent attention."}],
                       "max_tokens": n, "temperature": 0}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body,
                                 {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=60))


def main():
    tmp = tempfile.mkdtemp()
    model = os.path.join(tmp, "deepseek3-tiny.gguf")
    subprocess.run([BIN, "synth", "--arch", "deepseek2", "--preset", "deepseek3-tiny", "--seed", "7", "--dtype", "bf16",
                    "--out", model], check=True, capture_output=True)
    res = {}
    devices = os.environ.get("SERVE_CHECK_DEVICES", "cuda,cpu").split(",")  # cpu alone: a dry run off the GPU
    for device, port in zip(devices, (18431, 18432)):
        p, key, lines = serve(model, device, port, os.path.join(tmp, device))
        try:
            r = chat(port, key, 32)
            res[device] = {"kv_line": next((l for l in lines if "KV pool" in l), ""),
                           "memory_plan": next((l for l in lines if "cuda memory plan" in l), ""),
                           "answer": r["choices"][0]["message"]["content"], "usage": r["usage"]}
        finally:
            p.terminate()
            p.wait(timeout=60)
        print(device, json.dumps(res[device], indent=1))
    if "cuda" in res and "cpu" in res:
        res["answers_equal"] = res["cuda"]["answer"] == res["cpu"]["answer"]
        print("answers equal:", res["answers_equal"])
    json.dump(res, open(os.path.join(OUT, "serve_check.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
