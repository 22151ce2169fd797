{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "wattprint.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-wattprint unless the release name already contains it. */}}
{{- define "wattprint.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "wattprint.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wattprint.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wattprint.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wattprint.labels" -}}
helm.sh/chart: {{ include "wattprint.chart" . }}
{{ include "wattprint.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: exporter
app.kubernetes.io/part-of: wattprint
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "wattprint.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wattprint.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "wattprint.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the exporter-toolkit web config. */}}
{{- define "wattprint.webConfigSecret" -}}
{{- default (printf "%s-web-config" (include "wattprint.fullname" .)) .Values.webConfig.existingSecret }}
{{- end }}

{{/* The telemetry path, from config.web.telemetry_path when set. */}}
{{- define "wattprint.telemetryPath" -}}
{{- dig "web" "telemetry_path" "/metrics" .Values.config }}
{{- end }}

{{/* Probe and scrape scheme. */}}
{{- define "wattprint.scheme" -}}
{{- if .Values.webConfig.enabled }}{{ .Values.webConfig.scheme }}{{ else }}HTTP{{ end }}
{{- end }}

{{/* The intensity service (`wattprint intensity`, values intensity.*): its name, its own
  selector labels (another app.kubernetes.io/name, so that the DaemonSet's selector, Service and
  NetworkPolicy never take its pod for an exporter), and the URL the nodes read it at. */}}
{{- define "wattprint.intensityName" -}}
{{- printf "%s-intensity" (include "wattprint.fullname" . | trunc 53 | trimSuffix "-") }}
{{- end }}

{{- define "wattprint.intensitySelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-intensity" (include "wattprint.name" . | trunc 53 | trimSuffix "-") }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wattprint.testSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-test" (include "wattprint.name" . | trunc 58 | trimSuffix "-") }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wattprint.intensityLabels" -}}
helm.sh/chart: {{ include "wattprint.chart" . }}
{{ include "wattprint.intensitySelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: intensity
app.kubernetes.io/part-of: wattprint
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "wattprint.intensityUrl" -}}
{{- printf "http://%s.%s.svc:%d" (include "wattprint.intensityName" .) .Release.Namespace (int .Values.intensity.port) }}
{{- end }}

{{/* The nodes' configuration: `config`, with carbon.providers pointing at the intensity service
  when intensity.enabled (the real providers go to the intensity pod). */}}
{{- define "wattprint.nodeConfig" -}}
{{- $cfg := deepCopy .Values.config }}
{{- if .Values.intensity.enabled }}
{{- if not .Values.intensity.zone }}
{{- fail "intensity.enabled needs intensity.zone (the zone the nodes ask the service for, e.g. DE)" }}
{{- end }}
{{- if not (dig "carbon" "providers" (list) $cfg) }}
{{- fail "intensity.enabled needs config.carbon.providers (what the intensity service polls)" }}
{{- end }}
{{- $carbon := deepCopy (get $cfg "carbon") }}
{{- $_ := set $carbon "providers" (list (dict "type" "wattprint" "url" (include "wattprint.intensityUrl" .) "zone" .Values.intensity.zone "poll_interval_s" .Values.intensity.nodePollInterval)) }}
{{- $_ := set $cfg "carbon" $carbon }}
{{- end }}
{{- with $cfg }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/* The body of the ServiceMonitor's or PodMonitor's one endpoint (values `m`: serviceMonitor
  or podMonitor). prometheus-operator (pkg/prometheus/promcfg.go, v0.93) gives every target the
  labels namespace, service, pod, container (the exporter's own pod) and endpoint (the port
  name); with honorLabels they land on every Wattprint series that has no such label of its own
  (all node-level series, and endpoint series with namespace=""), where they would read as a
  model endpoint. The relabelings below, which the operator appends after its own, drop them and
  name the target by its node instead: node and instance are the node's name, cluster (values
  cluster.name) is added when set. tests/integration/test_helm_scrape.py checks this with a real
  Prometheus. */}}
{{- define "wattprint.monitorEndpoint" -}}
{{- $m := .m -}}
{{- $ := .root -}}
port: metrics
path: {{ include "wattprint.telemetryPath" $ }}
scheme: {{ include "wattprint.scheme" $ | lower }}
interval: {{ $m.interval }}
scrapeTimeout: {{ $m.scrapeTimeout }}
# Wattprint's namespace/endpoint/pod labels name the model endpoint: keep them.
honorLabels: {{ $m.honorLabels }}
{{- with $m.tlsConfig }}
tlsConfig:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $m.basicAuth }}
basicAuth:
  {{- toYaml . | nindent 2 }}
{{- end }}
relabelings:
  # the operator's target labels name the exporter's own pod, not a model endpoint
  - action: labeldrop
    regex: (namespace|service|pod|container|endpoint)
  - sourceLabels: [__meta_kubernetes_pod_node_name]
    targetLabel: node
    action: replace
  - sourceLabels: [__meta_kubernetes_pod_node_name]
    targetLabel: instance
    action: replace
  {{- with $.Values.cluster.name }}
  - targetLabel: {{ $.Values.cluster.label }}
    replacement: {{ . | quote }}
    action: replace
  {{- end }}
  {{- with $m.relabelings }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $m.metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The monitor's spec fields besides its endpoint (values `m`). */}}
{{- define "wattprint.monitorSpec" -}}
{{- $m := .m -}}
{{- with $m.jobLabel }}
jobLabel: {{ . }}
{{- end }}
{{- with $m.sampleLimit }}
sampleLimit: {{ int . }}
{{- end }}
{{- with $m.scrapeProtocols }}
scrapeProtocols:
  {{- toYaml . | nindent 2 }}
{{- end }}
namespaceSelector:
  matchNames:
    - {{ .root.Release.Namespace }}
selector:
  matchLabels:
    {{- include "wattprint.selectorLabels" .root | nindent 4 }}
{{- end }}
