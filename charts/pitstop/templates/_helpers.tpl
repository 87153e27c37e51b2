{{/*
Names. Every object the chart creates is named from "pitstop.fullname", so nameOverride and
fullnameOverride rename them all (as most charts do, e.g. for two umbrella charts that both
embed Pitstop). The release name "pitstop" keeps the names the docs use: pitstop-brain,
pitstop-detector, ...
*/}}

{{/* The chart's name: app.kubernetes.io/name (nameOverride). */}}
{{- define "pitstop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name: fullnameOverride, else the release name when it already
contains the chart's name, else release-name. Truncated so that "<fullname>-detector-own-node"
(the longest suffix) still fits 63 characters.
*/}}
{{- define "pitstop.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The brain's service account: brain.serviceAccount.name, else <fullname>-brain. */}}
{{- define "pitstop.brainServiceAccountName" -}}
{{- .Values.brain.serviceAccount.name | default (printf "%s-brain" (include "pitstop.fullname" .)) }}
{{- end }}

{{/* The detector's service account: detector.serviceAccount.name, else <fullname>-detector. */}}
{{- define "pitstop.detectorServiceAccountName" -}}
{{- .Values.detector.serviceAccount.name | default (printf "%s-detector" (include "pitstop.fullname" .)) }}
{{- end }}

{{/*
The brain's lock ConfigMap (the brain creates it; the chart only names it, in the brain's
PITSTOP_LOCK_NAME and in the Role that lets it get/update that one ConfigMap).
*/}}
{{- define "pitstop.lockName" -}}
{{- .Values.brain.lockName }}
{{- end }}

{{/* The reboot Jobs' namespace (the brain's PITSTOP_JOB_NAMESPACE). */}}
{{- define "pitstop.jobNamespace" -}}
{{- .Values.reboot.jobNamespace.name }}
{{- end }}

{{/* Standard labels: app.kubernetes.io/* on every object; `component` names the part. */}}
{{- define "pitstop.labels" -}}
app.kubernetes.io/name: {{ include "pitstop.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
app.kubernetes.io/part-of: pitstop
helm.sh/chart: {{ printf "%s-%s" .context.Chart.Name .context.Chart.Version | replace "+" "_" }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector labels: stable across upgrades (never the version). */}}
{{- define "pitstop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pitstop.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
A pod's labels: the standard ones and the user's podLabels; a standard label wins (a podLabel
that replaced a selector label would take the pod away from its Deployment or DaemonSet).
*/}}
{{- define "pitstop.podLabels" -}}
{{- toYaml (merge (include "pitstop.labels" . | fromYaml) (.podLabels | default dict)) }}
{{- end }}

{{/*
A Deployment's strategy or a DaemonSet's updateStrategy: rollingUpdate only with type
RollingUpdate (Helm merges a user's {type: OnDelete} with the default's rollingUpdate, which the
API server refuses).
*/}}
{{- define "pitstop.updateStrategy" -}}
type: {{ .type }}
{{- if and (eq .type "RollingUpdate") .rollingUpdate }}
rollingUpdate:
  {{- toYaml .rollingUpdate | nindent 2 }}
{{- end }}
{{- end }}

{{/* The image of the brain and of the reboot Jobs: repository:tag (tag defaults to appVersion). */}}
{{- define "pitstop.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The detector's slim image: repository:tag (tag defaults to appVersion). */}}
{{- define "pitstop.detectorImage" -}}
{{- printf "%s:%s" .Values.detector.image.repository (.Values.detector.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The detector's namespace: its own (detector.namespace) or the release's. */}}
{{- define "pitstop.detectorNamespace" -}}
{{- .Values.detector.namespace | default .Release.Namespace }}
{{- end }}

{{/* The pod securityContext every Pitstop pod runs with (PSA restricted). */}}
{{- define "pitstop.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The container securityContext of the brain and the detector (PSA restricted). */}}
{{- define "pitstop.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end }}
