{{/* Standard labels: app.kubernetes.io/* on every object; `component` names the part. */}}
{{- define "pitstop.labels" -}}
app.kubernetes.io/name: pitstop
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
app.kubernetes.io/part-of: pitstop
helm.sh/chart: {{ printf "%s-%s" .context.Chart.Name .context.Chart.Version }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector labels: stable across upgrades (never the version). */}}
{{- define "pitstop.selectorLabels" -}}
app.kubernetes.io/name: pitstop
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
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
