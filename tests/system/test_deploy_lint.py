"""Lints the deployment files with whatever linters this machine has, skipping (with the name) those it lacks:
hadolint (Dockerfile), yamllint (deploy/ YAML), ansible-playbook --syntax-check (the role), helm lint / helm
template (the chart), systemd-analyze verify (the unit the Ansible role renders). Structural checks that need no
linter always run: what the issue asks of each file is there, and tools/check_helm_chart.py checks the chart's
templates against values.yaml without helm."""
import os
import pathlib
import re
import shutil
import subprocess
import tempfile

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "citadel"


def need(tool):
    path = shutil.which(tool)
    if not path:
        pytest.skip(f"{tool} is not installed here: not run")
    return path


def run(*cmd, cwd=None):
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=300, cwd=cwd)
    assert r.returncode == 0, f"{' '.join(cmd)}:\n{r.stdout}\n{r.stderr}"
    return r


def test_dockerfile_shape_and_hadolint():
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert len(froms) == 2 and "-devel-" in froms[0] and "-runtime-" in froms[1], froms
    assert re.search(r"^USER 10001", text, flags=re.M)
    assert re.search(r"^HEALTHCHECK .*", text, flags=re.M) and "/health" in text
    run(need("hadolint"), str(DEPLOY / "docker" / "Dockerfile"))


def test_yamllint():
    run(need("yamllint"), "-s", "-c", str(DEPLOY / ".yamllint"), str(DEPLOY))


def test_ansible_syntax_and_rendered_unit_verifies():
    run(need("ansible-playbook"), "--syntax-check", "-i", "inventory.example", "site.yml", cwd=DEPLOY / "ansible")
    # The unit the role installs: render its template with the role's defaults and verify it like the task does.
    import jinja2
    role = DEPLOY / "ansible" / "roles" / "citadel"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    defaults = {k: v for k, v in defaults.items() if not (isinstance(v, str) and "{{" in v)}
    unit = jinja2.Template((role / "templates" / "citadel.service.j2").read_text(),
                           undefined=jinja2.StrictUndefined).render(**defaults)
    assert "WatchdogSec=60s" in unit and "User=citadel" in unit and "{{" not in unit
    cfg = jinja2.Template((role / "templates" / "citadel.yaml.j2").read_text()).render(
        citadel_host="127.0.0.1", citadel_port=8080, citadel_model="/m.gguf",
        citadel_config_extra=defaults["citadel_config_extra"])
    assert yaml.safe_load(cfg)["drain_timeout_s"] == 60
    sa = need("systemd-analyze")
    with tempfile.TemporaryDirectory() as d:
        p = pathlib.Path(d) / "citadel.service"
        p.write_text(unit.replace("/usr/local/bin/citadel", "/bin/true"))
        r = subprocess.run([sa, "verify", str(p)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_chart_has_what_the_issue_asks():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["apiVersion"] == "v2"
    assert values["resources"]["requests"]["nvidia.com/gpu"] == 1
    templates = {p.name: p.read_text() for p in (CHART / "templates").glob("*.yaml")}
    kinds = {k for t in templates.values() for k in re.findall(r"^kind: (\w+)", t, flags=re.M)}
    assert kinds >= {"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget",
                     "HorizontalPodAutoscaler"}, kinds
    dep = templates["deployment.yaml"]
    assert re.search(r"readinessProbe:\n\s+httpGet: \{path: /ready", dep)
    assert re.search(r"livenessProbe:\n\s+httpGet: \{path: /health", dep)
    assert "runAsNonRoot: true" in dep and "readOnlyRootFilesystem: true" in dep
    assert "type: Pods" in templates["hpa.yaml"] and "queueMetric" in templates["hpa.yaml"]


def test_chart_checker_without_helm():
    """tools/check_helm_chart.py (no helm binary here): every template's actions are known constructs, every
    .Values path exists in values.yaml and every value is read, and each template parses as YAML once its actions
    are stripped. Then the same checker on broken copies of the chart must find each fault (it can fail)."""
    import sys
    sys.path.insert(0, str(ROOT / "tools"))
    import check_helm_chart
    problems, checked = check_helm_chart.check_chart(CHART)
    assert problems == [] and checked == len(list((CHART / "templates").iterdir())) == 7, problems

    def broken(edit_file, old, new):
        with tempfile.TemporaryDirectory() as d:
            copy = pathlib.Path(d) / "citadel"
            shutil.copytree(CHART, copy)
            f = copy / edit_file
            text = f.read_text()
            assert old in text, (edit_file, old)
            f.write_text(text.replace(old, new, 1))
            return "\n".join(check_helm_chart.check_chart(copy)[0])
    assert ".Values.image.tagg is not in values.yaml" in broken(
        "templates/deployment.yaml", ".Values.image.tag", ".Values.image.tagg")
    assert ".Values.probes.periodSeconds is not in values.yaml" in broken(
        "values.yaml", "  periodSeconds: 10", "  period: 10")
    assert "probes.period is read by no template" in broken("values.yaml", "  periodSeconds: 10",
                                                           "  periodSeconds: 10\n  period: 10")
    assert "not YAML once the actions are stripped" in broken(
        "templates/service.yaml", "  type: {{ .Values.service.type }}", "   type: {{ .Values.service.type }}\n  - x")
    assert "'lower' is not a function" in broken(
        "templates/service.yaml", "{{ .Values.service.type }}", "{{ .Values.service.type | lower }}")
    assert "block(s) not closed by end" in broken("templates/hpa.yaml", "{{- end }}\n", "\n")
    assert "include of an undefined template" in broken(
        "templates/pdb.yaml", 'include "citadel.selector"', 'include "citadel.selectors"')
    assert "not a field of Chart.yaml" in broken("templates/_helpers.tpl", ".Chart.AppVersion", ".Chart.KubeVersion")


def test_helm_lint_with_helms_library():
    """Helm's own lint (Helm v4 from the helm-sdkpy wheel, tools/helm_lint.py; scripts/install-deps.sh test fetches
    it): the chart lints clean with its defaults and with secrets.create (the Secret templates rendered too), and
    broken copies (Chart.yaml, values.yaml, a template that renders to bad YAML or fails to render) are errors."""
    import sys
    sys.path.insert(0, str(ROOT / "tools"))
    import helm_lint
    if not os.path.isfile(helm_lint.default_lib()):
        pytest.skip(f"{helm_lint.default_lib()} is absent (scripts/install-deps.sh test fetches it): not run")

    def lint(edits=()):
        with tempfile.TemporaryDirectory() as d:
            copy = pathlib.Path(d) / "citadel"
            shutil.copytree(CHART, copy)
            for edit_file, old, new in edits:
                f = copy / edit_file
                assert old in f.read_text(), (edit_file, old)
                f.write_text(f.read_text().replace(old, new, 1))
            # In a child process: the Go runtime stays out of pytest's.
            r = subprocess.run([sys.executable, str(ROOT / "tools" / "helm_lint.py"), str(copy)], capture_output=True,
                               text=True, timeout=120)
            assert r.returncode in (0, 1), r.stderr
            return [tuple(l.split(" ", 1)) for l in r.stdout.splitlines()]

    assert lint() == [("INFO", "Chart.yaml")]  # the one INFO: no icon
    secrets = [("values.yaml", "  create: false", "  create: true"),
               ("values.yaml", 'adminKey: ""', 'adminKey: "ck-0123456789ab-' + "A" * 43 + '"'),
               ("values.yaml", 'auditKey: ""', 'auditKey: "pem"'), ("values.yaml", 'pgPassword: ""', 'pgPassword: "p"'),
               ("values.yaml", 'tlsCrt: ""', 'tlsCrt: "crt"'), ("values.yaml", 'tlsKey: ""', 'tlsKey: "key"'),
               ("values.yaml", 'tlsName: ""', 'tlsName: "citadel-tls"')]
    assert lint(secrets) == [("INFO", "Chart.yaml")]
    assert ("ERROR", "Chart.yaml") in lint([("Chart.yaml", "version:", "versions:")])
    assert ("ERROR", "values.yaml") in lint([("values.yaml", "replicaCount: 2", "replicaCount: [2")])
    assert ("ERROR", "templates/service.yaml") in lint([("templates/service.yaml", "  type: {{ .Values.service.type }}",
                                                         "   type: {{ .Values.service.type }}\n  - x")])
    assert ("ERROR", "templates/") in lint([("templates/deployment.yaml", ".Values.image.tag", ".Values.image.tag.x")])


def test_helm_lint_and_template():
    helm = need("helm")
    run(helm, "lint", str(CHART))
    out = run(helm, "template", "t", str(CHART)).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"])
    dep = next(d for d in docs if d["kind"] == "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
