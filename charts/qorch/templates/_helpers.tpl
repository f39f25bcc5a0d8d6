{{/*
The labels Helm adds to every object. They are the only difference between this chart's
output and the kustomize output of manifests/ (tests/integration/test_helm_install.py drops these
keys, and only these, before comparing). Selectors never carry them.
*/}}
{{- define "qorch.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* The labels of the operator's objects (manifests/base) plus Helm's. */}}
{{- define "qorch.operatorLabels" -}}
app.kubernetes.io/name: qorch-operator
app.kubernetes.io/part-of: qorch
{{ include "qorch.helmLabels" . }}
{{- end }}

{{/* The operator's pods: what the Deployment, Service, NetworkPolicy and PDB select. */}}
{{- define "qorch.selectorLabels" -}}
app.kubernetes.io/name: qorch-operator
{{- end }}

{{/* The image the Dockerfile builds: qorch-operator:<appVersion> unless told otherwise. */}}
{{- define "qorch.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
