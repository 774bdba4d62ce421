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
{{- define "dcasgd.witnessName" -}}{{ include "dcasgd.fullname" . }}-witness{{- end -}}

{{/* "true" when every shard runs as a replicated pair (ps.replicas 2). */}}
{{- define "dcasgd.replicated" -}}
{{- if eq (int .Values.ps.replicas) 2 -}}true{{- end -}}
{{- end -}}

{{/* The witness's address, as the members dial it (its Service). */}}
{{- define "dcasgd.witnessAddress" -}}
{{- printf "%s.%s.svc.%s:%d" (include "dcasgd.witnessName" .) .Release.Namespace .Values.clusterDomain (int .Values.ps.grpcPort) -}}
{{- end -}}

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

{{/*
Security (docs/security.md). Secret names: the user's existing Secret, or the
chart's own. The CA Secret (with its key) is never mounted.
*/}}
{{- define "dcasgd.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "dcasgd.fullname" .)) .Values.security.tls.existingSecret -}}
{{- end -}}
{{- define "dcasgd.clientTlsSecretName" -}}
{{- default (printf "%s-client-tls" (include "dcasgd.fullname" .)) .Values.security.tls.existingClientSecret -}}
{{- end -}}
{{- define "dcasgd.caSecretName" -}}{{ include "dcasgd.fullname" . }}-ca{{- end -}}
{{- define "dcasgd.authSecretName" -}}
{{- default (printf "%s-auth" (include "dcasgd.fullname" .)) .Values.security.auth.existingSecret -}}
{{- end -}}

{{/* "true" when the chart makes its certificates with cert-manager. */}}
{{- define "dcasgd.useCertManager" -}}
{{- $tls := .Values.security.tls -}}
{{- if and $tls.enabled (not $tls.existingSecret) $tls.certManager.enabled (.Capabilities.APIVersions.Has "cert-manager.io/v1") -}}true{{- end -}}
{{- end -}}

{{/* The names in the shards' certificate: every form of the per-shard DNS
names, and with ps.replicas 2 the witness's Service names. */}}
{{- define "dcasgd.psDnsNames" -}}
{{- $h := include "dcasgd.headlessName" . -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list (printf "*.%s" $h) (printf "*.%s.%s" $h $ns) (printf "*.%s.%s.svc" $h $ns) (printf "*.%s.%s.svc.%s" $h $ns .Values.clusterDomain) (printf "%s.%s.svc" $h $ns) "localhost" -}}
{{- if include "dcasgd.replicated" . -}}
{{- /* The witness serves with the same certificate. */ -}}
{{- $w := include "dcasgd.witnessName" . -}}
{{- $names = concat $names (list $w (printf "%s.%s" $w $ns) (printf "%s.%s.svc" $w $ns) (printf "%s.%s.svc.%s" $w $ns .Values.clusterDomain)) -}}
{{- end -}}
{{- $names | toJson -}}
{{- end -}}

{{/*
Client side of the shards' security for a worker-image container: flags.
Call with (dict "root" $ "role" "worker"|"reader"); role "" sends no token.
*/}}
{{- define "dcasgd.clientSecurityArgs" -}}
{{- $s := .root.Values.security -}}
{{- if $s.tls.enabled }}
- --tls_ca=/etc/dcasgd/tls/ca.crt
{{- if $s.tls.mutual }}
- --tls_cert=/etc/dcasgd/tls/tls.crt
- --tls_key=/etc/dcasgd/tls/tls.key
{{- end }}
{{- end }}
{{- if and $s.auth.enabled .role }}
- --auth_token_file=/etc/dcasgd/auth/token
{{- end }}
{{- end -}}

{{- define "dcasgd.clientSecurityMounts" -}}
{{- $s := .root.Values.security -}}
{{- if $s.tls.enabled }}
- name: tls
  mountPath: /etc/dcasgd/tls
  readOnly: true
{{- end }}
{{- if and $s.auth.enabled .role }}
- name: auth
  mountPath: /etc/dcasgd/auth
  readOnly: true
{{- end }}
{{- end -}}

{{/* Clients see the CA (and, with mutual TLS, their own certificate), never the shards' key. */}}
{{- define "dcasgd.clientSecurityVolumes" -}}
{{- $s := .root.Values.security -}}
{{- if $s.tls.enabled }}
- name: tls
  secret:
    {{- if $s.tls.mutual }}
    secretName: {{ include "dcasgd.clientTlsSecretName" .root }}
    items:
      - {key: ca.crt, path: ca.crt}
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
    {{- else }}
    secretName: {{ include "dcasgd.tlsSecretName" .root }}
    items:
      - {key: ca.crt, path: ca.crt}
    {{- end }}
{{- end }}
{{- if and $s.auth.enabled .role }}
- name: auth
  secret:
    secretName: {{ include "dcasgd.authSecretName" .root }}
    items:
      - {key: {{ .role }}, path: token}
{{- end }}
{{- end -}}
