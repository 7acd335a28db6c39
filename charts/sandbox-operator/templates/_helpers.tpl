{{/* The chart's name. */}}
{{- define "sandbox-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, used for every object the chart makes. */}}
{{- define "sandbox-operator.fullname" -}}
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

{{- define "sandbox-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sandbox-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sandbox-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sandbox-operator.labels" -}}
helm.sh/chart: {{ include "sandbox-operator.chart" . }}
{{ include "sandbox-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sandbox-operator
{{- end }}

{{- define "sandbox-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sandbox-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sandbox-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when leader election is on: asked for, or more than one replica. */}}
{{- define "sandbox-operator.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{- define "sandbox-operator.leaseName" -}}
{{- default (include "sandbox-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The rules the operator needs in every namespace it watches. */}}
{{- define "sandbox-operator.rules" -}}
- apiGroups: ["sandboxes.dev"]
  resources: ["sandboxprocesses", "ptysessions"]
  # delete: objects past ttlSecondsAfterFinished.
  verbs: ["get", "list", "watch", "patch", "update", "delete"]
- apiGroups: ["sandboxes.dev"]
  resources: ["sandboxprocesses/status", "ptysessions/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["sandboxes.dev"]
  resources: ["sandboxprocesses/finalizers", "ptysessions/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["pods"]
  # podName targets: the Pod's IP and UID.
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["secrets"]
  # get: spec.sandbox.tokenSecretRef; create/update/patch: the PtySession token Secrets the
  # operator owns. No list or watch: the operator reads Secrets only by name.
  verbs: ["get", "create", "update", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
