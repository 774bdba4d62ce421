{{/*
Names. fullname is "<release>" when the release name already contains the
chart name, else "<release>-<chart>"; fullnameOverride replaces it.
Kubernetes names are at most 63 characters; "-ps-headless" is the longest
suffix added, so fullname is cut to 50.
*/}}
{{- define "dcasgd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "dcasgd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "dcasgd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dcasgd.psName" -}}{{ include "dcasgd.fullname" . }}-ps{{- end -}}
{{- define "dcasgd.headlessName" -}}{{ include "dcasgd.fullname" . }}-ps-headless{{- end -}}
{{- define "dcasgd.workerName" -}}{{ include "dcasgd.fullname" . }}-worker{{- end -}}
{{- define "dcasgd.evaluatorName" -}}{{ include "dcasgd.fullname" . }}-evaluator{{- end -}}
{{- define "dcasgd.configName" -}}{{ include "dcasgd.fullname" . }}-config{{- end -}}

{{/*
Selector labels: stable for the life of a release (never the version or the
chart), because Deployment and StatefulSet selectors are immutable.
Call with (dict "root" $ "component" "ps").
*/}}
{{- define "dcasgd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dcasgd.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All recommended labels: the selector labels plus version and chart. */}}
{{- define "dcasgd.labels" -}}
{{ include "dcasgd.selectorLabels" . }}
app.kubernetes.io/part-of: dcasgd
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "dcasgd.chart" .root }}
{{- end -}}

{{/* Image reference. Call with (dict "root" $ "image" .Values.image.ps). */}}
{{- define "dcasgd.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if .root.Values.image.registry -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
The shard address template the workers expand for i in [0, shardCount):
stable per-shard DNS names from the StatefulSet's headless Service.
*/}}
{{- define "dcasgd.psAddressTemplate" -}}
{{- printf "%s-{i}.%s.%s.svc.%s:%d" (include "dcasgd.psName" .) (include "dcasgd.headlessName" .) .Release.Namespace .Values.clusterDomain (int .Values.ps.grpcPort) -}}
{{- end -}}

{{/* Rolls pods whenever the training configuration changes. */}}
{{- define "dcasgd.configChecksum" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end -}}

{{/* prometheus.io/* annotations, used when no PodMonitor/ServiceMonitor is. */}}
{{- define "dcasgd.hasMonitoringApi" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}true{{- end -}}
{{- end -}}

{{- define "dcasgd.scrapeAnnotations" -}}
{{- if and .root.Values.metrics.scrapeAnnotations (not (include "dcasgd.hasMonitoringApi" .root)) -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end -}}
{{- end -}}

{{/* S3 environment for workers and the data-prep Job. */}}
{{- define "dcasgd.s3Env" -}}
{{- if hasPrefix "s3://" .Values.data.url }}
{{- with .Values.data.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.data.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.data.s3.secretAccessKeyKey }}
{{- end }}
- name: AWS_REGION
  value: {{ .Values.data.s3.region | quote }}
{{- with .Values.data.s3.endpoint }}
- name: AWS_ENDPOINT_URL_S3
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* An env entry read from the training ConfigMap. (dict "root" $ "env" "DCASGD_LR" "key" "lr") */}}
{{- define "dcasgd.configEnv" -}}
- name: {{ .env }}
  valueFrom:
    configMapKeyRef:
      name: {{ include "dcasgd.configName" .root }}
      key: {{ .key }}
{{- end -}}

{{/* Common pod spec fields. */}}
{{- define "dcasgd.podCommon" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}
